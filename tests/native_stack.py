"""Run docker-compose.yml natively: its commands, configs and mounts, with Debian's binaries.

No Docker engine runs in CI, so each compose service becomes a local process:
services built from this repo's Dockerfile run `python -m exporter <command>`,
prom/prometheus and prom/alertmanager run Debian's `prometheus` and
`prometheus-alertmanager` with the compose file's flags. Grafana has no Debian
package: its provisioning is checked as files, and every dashboard query runs
against this Prometheus instead.

Two things are rewritten, the two that Docker itself provides:
`service:port` host names (and a service's own `0.0.0.0:port`) become
127.0.0.1 and a free port, and the container paths of bind mounts become
copies of the mounted files (rewritten the same way). A test may also point
an outside service's address (PagerDuty's) at a local stand-in, and shorten
Alertmanager's `group_wait`s (`group_wait=`): a test waits for the first
notification, not for a batch to gather. Compose variables are interpolated
from the given environment, as from a `.env` file.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
OWN_IMAGE = "kpi-exporter"
# image repository -> (Debian binary, Debian package)
DEBIAN_BINARIES = {"prom/prometheus": ("prometheus", "prometheus"),
                   "prom/alertmanager": ("prometheus-alertmanager", "prometheus-alertmanager")}
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}")


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and $$, in every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.groups()
        current = env.get(name)
        if op == ":-" and not current or op == "-" and current is None:
            return default
        return current or ""

    return _VARIABLE.sub(sub, value)


def load_compose(env: dict[str, str]) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def image_repository(service: dict) -> str:
    return service["image"].rsplit(":", 1)[0]


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(source in the repo, container path) of each bind mount; named volumes excluded."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((ROOT / source).resolve(), target))
    return mounts


def named_volumes(service: dict) -> list[tuple[str, str]]:
    return [tuple(v.split(":")[:2]) for v in service.get("volumes", [])
            if not v.split(":")[0].startswith((".", "/"))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NativeStack:
    def __init__(self, workdir: Path, env: dict[str, str],
                 external: dict[str, str] | None = None, group_wait: str | None = "1s"):
        """`external`: base URLs outside the stack (a SaaS API) -> local stand-ins;
        `group_wait`: every group_wait of the Alertmanager config (None: as written)."""
        self.workdir = workdir
        self.external = external or {}
        self.group_wait = group_wait
        self.compose = load_compose(env)
        self.services: dict[str, dict] = self.compose["services"]
        # service -> {container port: host port}
        self.ports = {name: {int(p.split(":")[-1]): free_port() for p in svc.get("ports", [])}
                      for name, svc in self.services.items()}
        self.processes: dict[str, subprocess.Popen] = {}
        self.paths: dict[str, list[tuple[str, Path]]] = {}  # service -> (container, host)

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.ports[service][container_port]}"

    # ------------------------------------------------------------------ rewriting

    def rewrite(self, text: str, service: str) -> str:
        for url, local in self.external.items():
            text = text.replace(url, local)
        for port, host_port in self.ports[service].items():
            text = re.sub(rf"\b(0\.0\.0\.0|127\.0\.0\.1|localhost):{port}\b",
                          f"127.0.0.1:{host_port}", text)
        for other, ports in self.ports.items():
            for port, host_port in ports.items():
                text = re.sub(rf"(?<![\w.-]){re.escape(other)}:{port}\b",
                              f"127.0.0.1:{host_port}", text)
        # longest container path first, and only whole path components
        for container, host in sorted(self.paths.get(service, []), key=lambda p: -len(p[0])):
            text = re.sub(rf"(?<![\w./-]){re.escape(container)}(?=[/\s\"',\]]|$)",
                          str(host), text, flags=re.M)
        return text

    def _prepare_mounts(self, name: str) -> None:
        service = self.services[name]
        root = self.workdir / f"service-{name}"  # not a bare name: cwd is on sys.path
        self.paths[name] = []
        for source, target in bind_mounts(service):
            self.paths[name].append((target, root / "mnt" / target.lstrip("/")))
        for volume, target in named_volumes(service):
            host = self.workdir / "volumes" / volume  # one per volume: services share it
            host.mkdir(parents=True, exist_ok=True)
            self.paths[name].append((target, host))
        for source, target in bind_mounts(service):
            host = root / "mnt" / target.lstrip("/")
            files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
            for path in files:
                dest = host if source.is_file() else host / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix in (".yml", ".yaml", ".json", ".md"):
                    text = self.rewrite(path.read_text(), name)
                    if self.group_wait and image_repository(service) == "prom/alertmanager":
                        text = re.sub(r"\bgroup_wait: \S+", f"group_wait: {self.group_wait}",
                                      text)
                    dest.write_text(text)
                else:
                    shutil.copy2(path, dest)

    def command(self, name: str) -> tuple[list[str], dict[str, str]]:
        service = self.services[name]
        raw = service.get("command", [])
        args = shlex.split(raw) if isinstance(raw, str) else list(raw)
        args = [self.rewrite(a, name) for a in args]
        # Only what the container would see (its `environment:`), and what runs Python here.
        host = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env = {**host, **{k: self.rewrite(str(v), name)
                          for k, v in (service.get("environment") or {}).items()}}
        if "build" in service:
            return [sys.executable, "-m", "exporter", *args], env
        binary, _ = DEBIAN_BINARIES[image_repository(service)]
        return [shutil.which(binary) or binary, *args], env

    def health_url(self, name: str) -> str | None:
        test = " ".join(self.services[name].get("healthcheck", {}).get("test", []))
        found = re.search(r"http://[^\s'\"]+", test)
        return self.rewrite(found.group(0), name) if found else None

    # ------------------------------------------------------------------ running

    def start_order(self, skip: set[str]) -> list[str]:
        order: list[str] = []

        def visit(name: str) -> None:
            if name in order or name in skip:
                return
            for dependency in self.services[name].get("depends_on", {}):
                visit(dependency)
            order.append(name)

        for name in self.services:
            visit(name)
        return order

    def one_shot(self, name: str) -> bool:
        """A service that runs once, to the end (`restart: "no"`): waited on to exit 0."""
        return self.services[name].get("restart") == "no"

    def start(self, skip: set[str] = frozenset(), timeout: float = 60) -> "NativeStack":
        for name in self.start_order(set(skip)):
            self._prepare_mounts(name)
            argv, env = self.command(name)
            log = open(self.workdir / f"{name}.log", "wb")
            self.processes[name] = subprocess.Popen(argv, env=env, stdout=log,
                                                    stderr=subprocess.STDOUT, cwd=self.workdir)
            if self.one_shot(name):  # a backfill reads whole accounts: give it time
                self.wait_done(name, max(timeout, 300))
            else:
                self.wait_healthy(name, timeout)
        return self

    def wait_done(self, name: str, timeout: float) -> None:
        try:
            code = self.processes[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{name} still running after {timeout}s:\n{self.log(name)}")
        if code != 0:
            raise RuntimeError(f"{name} exited with {code}:\n{self.log(name)}")

    def wait_healthy(self, name: str, timeout: float) -> None:
        url = self.health_url(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{self.log(name)}")
            try:
                if url is None or requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} not healthy at {url} after {timeout}s:\n{self.log(name)}")

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
