"""The real Prometheus scrapes the exporter over TLS with basic auth, as the README's
Security section shows, and gets 401 without the credentials."""

from __future__ import annotations

import subprocess
import time

import bcrypt
import pytest
import requests
import yaml

from exporter.demo import DemoExporter
from exporter import webconfig
from native_stack import free_port
from tls import make_certificates
from tools import require

pytestmark = pytest.mark.slow


def test_prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_without(tmp_path):
    prometheus = require("prometheus", "prometheus")
    certs = make_certificates(tmp_path)
    (tmp_path / "password").write_text("scrape-me\n")
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {"prometheus": hashed}}))
    demo = DemoExporter(listen=("127.0.0.1", 0), live=False, poll_interval=3600,
                        web=webconfig.load(str(tmp_path / "web.yml")))
    port = free_port()
    target = f"127.0.0.1:{demo.server.port}"
    tls = {"ca_file": str(certs.ca)}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "kpi-exporter", "scheme": "https", "tls_config": tls,
             "basic_auth": {"username": "prometheus",
                            "password_file": str(tmp_path / "password")},
             "static_configs": [{"targets": [target]}]},
            {"job_name": "no-credentials", "scheme": "https", "tls_config": tls,
             "static_configs": [{"targets": [target]}]}]}))
    demo.start()
    process = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets",
                                       timeout=2).json()["data"]["activeTargets"]
                health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
            except (requests.RequestException, ValueError, KeyError):
                pass
            if health.get("kpi-exporter", ("",))[0] == "up" and \
                    health.get("no-credentials", ("",))[0] == "down":
                break
            time.sleep(0.5)
        assert health["kpi-exporter"] == ("up", "")
        state, error = health["no-credentials"]
        assert state == "down" and "401" in error, error
        sample = requests.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=5, params={
            "query": 'kpi_exporter_build_info{job="kpi-exporter"}'}).json()["data"]["result"]
        assert sample and sample[0]["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(15)
        demo.stop()
