"""The HTTP server against greedy, slow and strange clients, and TLS and basic auth,
over real sockets."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import pytest
import requests
from click.testing import CliRunner

from exporter import webconfig
from exporter.config import ConfigError
from exporter.server import BackgroundHttpServer
from tls import make_certificates

PASSWORD = "s3cret-scraper"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello {environ['PATH_INFO']}\n".encode()]


@pytest.fixture
def server():
    running = BackgroundHttpServer("127.0.0.1", 0, hello, header_timeout=1.0,
                                   idle_timeout=2.0).start()
    yield running
    running.stop()


def url(server, path="/metrics"):
    return f"{server.scheme}://127.0.0.1:{server.port}{path}"


def test_200_concurrent_scrapes_are_all_answered(server):
    def scrape(_):
        with requests.Session() as session:  # a connection of its own each
            return session.get(url(server), timeout=30).status_code

    with ThreadPoolExecutor(200) as pool:
        statuses = list(pool.map(scrape, range(200)))
    assert statuses == [200] * 200


def slow_client(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    return sock


def test_slow_clients_hold_no_thread_and_are_cut_off(server):
    threads_before = threading.active_count()
    slow = [slow_client(server) for _ in range(300)]
    try:
        # a normal scrape is answered while 300 clients trickle their headers
        assert requests.get(url(server), timeout=5).text == "hello /metrics\n"
        assert threading.active_count() <= threads_before + 8  # the worker pool at most
        time.sleep(1.5)  # past the 1 s header timeout: every slow one is closed
        for sock in slow:
            sock.settimeout(2)
            assert sock.recv(100) == b""
    finally:
        for sock in slow:
            sock.close()


def raw(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_what_the_server_refuses(server):
    assert raw(server, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").startswith(
        b"HTTP/1.1 405")
    assert raw(server, b"GET /metrics HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n").startswith(
        b"HTTP/1.1 431")
    assert raw(server, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(server, b"GET /x HTTP/1.0\r\n\r\n").endswith(b"hello /x\n")  # 1.0 then closed


def test_keep_alive_serves_several_requests_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and b"hello /b" in answer


# --- TLS and basic auth -------------------------------------------------------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


def web_config(tmp_path, text: str):
    path = tmp_path / "web.yml"
    path.write_text(text)
    return webconfig.load(str(path))


def secured(tmp_path, certificates, extra: str = "") -> BackgroundHttpServer:
    from exporter.server import make_app

    web = web_config(tmp_path, f"tls_server_config:\n  cert_file: {certificates.server_cert}\n"
                               f"  key_file: {certificates.server_key}\n{extra}"
                               f"basic_auth_users:\n  prometheus: '{HASH}'\n")

    class Poller:
        def ready(self):
            return True

        def states(self):
            return {}

    from prometheus_client import CollectorRegistry
    app = make_app(CollectorRegistry(), Poller(), web.allows)
    return BackgroundHttpServer("127.0.0.1", 0, app, tls=web.tls, headers=web.headers).start()


def test_tls_and_basic_auth(tmp_path, certificates):
    server = secured(tmp_path, certificates)
    try:
        ca = str(certificates.ca)
        assert requests.get(url(server), verify=ca, timeout=5).status_code == 401
        assert requests.get(url(server), verify=ca, auth=("prometheus", "wrong"),
                            timeout=5).status_code == 401
        assert requests.get(url(server), verify=ca, auth=("nobody", PASSWORD),
                            timeout=5).status_code == 401
        good = requests.get(url(server), verify=ca, auth=("prometheus", PASSWORD), timeout=5)
        assert good.status_code == 200
        assert requests.get(url(server, "/ready"), verify=ca, timeout=5).status_code == 401
        assert requests.get(url(server, "/healthz"), verify=ca, timeout=5).status_code == 200
        assert requests.get(url(server, "/"), verify=ca, timeout=5).headers[
            "WWW-Authenticate"] == 'Basic realm="kpi-exporter"'
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP to a TLS port
            requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    finally:
        server.stop()


def test_client_certificates_when_the_web_config_requires_them(tmp_path, certificates):
    server = secured(tmp_path, certificates, f"  client_auth_type: RequireAndVerifyClientCert\n"
                                             f"  client_ca_file: {certificates.ca}\n")
    try:
        ca, auth = str(certificates.ca), ("prometheus", PASSWORD)
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url(server), verify=ca, auth=auth, timeout=5)
        answer = requests.get(url(server), verify=ca, auth=auth, timeout=5,
                              cert=(str(certificates.client_cert), str(certificates.client_key)))
        assert answer.status_code == 200
    finally:
        server.stop()


def test_tls_versions_below_the_minimum_are_refused(tmp_path, certificates):
    server = secured(tmp_path, certificates, "  min_version: TLS13\n")
    try:
        context = ssl.create_default_context(cafile=str(certificates.ca))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                with context.wrap_socket(sock, server_hostname="127.0.0.1"):
                    pass
    finally:
        server.stop()


def test_relative_paths_resolve_against_the_web_configs_directory(tmp_path, certificates):
    here = tmp_path / "conf"
    here.mkdir()
    for name in ("server.crt", "server.key"):
        (here / name).write_bytes((certificates.server_cert.parent / name).read_bytes())
    web = web_config(here, "tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
    assert web.tls is not None and web.scheme == "https"


@pytest.mark.parametrize("text,key", [
    ("basic_auth_users: {prometheus: plaintext}\n", "basic_auth_users.prometheus"),
    ("basic_auth_users: {}\n", "basic_auth_users"),
    ("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n",
     "tls_server_config.cert_file"),
    ("tls_server_config: {key_file: k}\n", "tls_server_config.cert_file"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, min_version: TLS99}\n",
     "tls_server_config.min_version"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: Sometimes}\n",
     "tls_server_config.client_auth_type"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: "
     "RequireAndVerifyClientCert}\n", "tls_server_config.client_auth_type"),
    ("tls_server_config: {cert_file: CERT, key_file: CA}\n", "tls_server_config.cert_file"),
    ("colour: red\n", "colour"),
    ("http_server_config: {headers: {X-A: [1]}}\n", "http_server_config.headers"),
])
def test_bad_web_configs_are_one_line_config_errors(tmp_path, certificates, text, key):
    text = text.replace("CERT", str(certificates.server_cert)).replace(
        "KEY", str(certificates.server_key)).replace("CA", str(certificates.ca))
    with pytest.raises(ConfigError) as caught:
        web_config(tmp_path, text)
    assert str(caught.value).startswith(f"{tmp_path / 'web.yml'}: {key}:"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_flag_wins_over_the_config_key_and_a_bad_one_exits_2(tmp_path):
    from exporter.cli import main

    good = tmp_path / "good.yml"
    good.write_text(f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("basic_auth_users: {prometheus: plaintext}\n")
    config = tmp_path / "kpi.yml"
    config.write_text(f"sources: {{stripe: {{api_key: sk_test_1}}}}\nweb_config_file: {good.name}\n"
                      "listen: 127.0.0.1:1\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config),
                                       "--web-config-file", str(bad)])
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"kpi-exporter: web config error: {bad}: basic_auth_users.prometheus:")
    config.write_text(f"sources: {{stripe: {{api_key: sk_test_1}}}}\nweb_config_file: {bad.name}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2 and f"{bad}" in result.stderr  # relative to the config's dir


def test_a_password_is_checked_once_then_remembered(tmp_path):
    web = web_config(tmp_path, f"basic_auth_users: {{prometheus: '{HASH}'}}\n")
    header = "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()
    assert web.allows("/metrics", header) and web.allows("/metrics", header)
    assert len(web._verified) == 1 and PASSWORD.encode() not in b"".join(web._verified)
    assert not web.allows("/metrics", "Basic !!!") and not web.allows("/metrics", "Bearer x")
    assert web.allows("/healthz", None)
