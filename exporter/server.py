"""The HTTP endpoints: /metrics, /healthz, /ready and a landing page at /.

A small WSGI app on the standard library's threaded WSGI server. /metrics is
prometheus_client's own WSGI app (content negotiation, gzip, OpenMetrics).
"""

from __future__ import annotations

import html
import socket
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.poller import Poller


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - scrapes would flood stderr
        pass


def make_app(registry: CollectorRegistry, poller: Poller):
    metrics_app = make_wsgi_app(registry)

    def text(start_response, status: str, body: str, content_type: str = "text/plain"):
        start_response(status, [("Content-Type", f"{content_type}; charset=utf-8")])
        return [body.encode()]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            return text(start_response, "200 OK", "ok\n")
        if path == "/ready":
            if poller.ready():
                return text(start_response, "200 OK", "ready\n")
            waiting = sorted(n for n, s in poller.states().items() if not s.polled)
            return text(start_response, "503 Service Unavailable",
                        f"waiting for a first poll of: {', '.join(waiting)}\n")
        if path == "/":
            return text(start_response, "200 OK", _landing(poller), "text/html")
        return text(start_response, "404 Not Found", "not found\n")

    return app


def _landing(poller: Poller) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{'up' if s.up else ('down' if s.polled else 'starting')}"
        f"</td><td>{html.escape(s.last_error)}</td></tr>"
        for name, s in sorted(poller.states().items()))
    return (
        "<!doctype html><html><head><title>kpi-exporter</title></head><body>"
        f"<h1>kpi-exporter {__version__}</h1>"
        '<p><a href="/metrics">Metrics</a> · <a href="/healthz">Health</a> · '
        '<a href="/ready">Ready</a></p>'
        f"<table><tr><th>Source</th><th>State</th><th>Last error</th></tr>{rows}</table>"
        "</body></html>\n"
    )


class BackgroundHttpServer:
    """Serves the app in a background thread; `.port` is the bound port."""

    def __init__(self, host: str, port: int, app):
        server_class = _IPv6Server if ":" in host else _ThreadingServer
        self._server = make_server(host, port, app, server_class=server_class,
                                   handler_class=_QuietHandler)
        self.host = host
        self.port = self._server.server_address[1]
        # A short poll: stop() returns at once rather than after up to half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "BackgroundHttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever on a server never started
            self._server.shutdown()
        self._server.server_close()
