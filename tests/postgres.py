"""A throw-away PostgreSQL server for tests: initdb into a temporary directory, a free
port on loopback, trust authentication, stopped and deleted afterwards.

Debian's `postgresql` package provides the binaries (.ci/run installs it). The
server refuses to run as root, so as root it runs as the package's `postgres`
user.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from native_stack import free_port

ADMIN_PASSWORD = "admin-of-a-throw-away-server"


def _binaries() -> Path | None:
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))  # Debian's layout
    if versions:
        return Path(versions[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PostgresServer:
    def __init__(self):
        binaries = _binaries()
        if binaries is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL is missing: .ci/run must install Debian's postgresql")
            pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
        self.bin = binaries
        # Not pytest's tmp_path: its parents are private to root, and postgres must get in.
        self.directory = Path(tempfile.mkdtemp(prefix="kpi-exporter-pg-"))
        directory = self.directory
        self.data = directory / "data"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(directory, "postgres")
        # Passwords over TCP (so a wrong one is refused, as in production); the
        # superuser's is ADMIN_PASSWORD.
        secret = directory / "pwfile"
        secret.write_text(ADMIN_PASSWORD + "\n")
        if self._as:
            shutil.chown(secret, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={secret}", "--no-sync", "-E", "UTF8")
        self.process = subprocess.Popen(
            [*self._as, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={directory}",
             "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                              str(self.port)], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.2)

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres:{ADMIN_PASSWORD}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
