"""The HTTP endpoints (/metrics, /healthz, /ready, a landing page at /) and the server for them.

`make_app` is a small WSGI app; /metrics is prometheus_client's own WSGI app
(content negotiation, gzip, OpenMetrics). With a web config that names users,
every path but /healthz needs their basic-auth credentials.

`BackgroundHttpServer` serves it over HTTP/1.1 (or HTTPS, from the web config)
on an asyncio event loop in one background thread: the loop reads each
request's headers, with a time limit, before a worker of a small, fixed pool
runs the app. A client that trickles its headers (slowloris) holds a coroutine
until its time is up, never a thread; the listen backlog takes bursts of
scrapes; connections beyond a cap are closed at once. The standard library's
threaded server (a thread per connection, a backlog of 5) lost a third of 200
concurrent scrapes and kept a thread per slow client. Waitress reads requests
the same careful way, but has no TLS, which exporters serve themselves.
"""

from __future__ import annotations

import asyncio
import html
import io
import logging
import socket
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.poller import Poller, SourceState

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers
MAX_HEADERS = 100
_REASONS = {400: "Bad Request", 401: "Unauthorized", 405: "Method Not Allowed",
            408: "Request Timeout", 413: "Content Too Large",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def make_app(registry: CollectorRegistry, poller: Poller,
             allows: Callable[[str, str | None], bool] | None = None, *,
             metrics_app: Callable | None = None):
    """The WSGI app; `allows(path, authorization header)` says who may see what.
    /metrics is `metrics_app` (exposition.MetricsApp in the exporter), or the
    registry rendered whole."""
    metrics_app = metrics_app or make_wsgi_app(registry)

    def text(start_response, status: str, body: str, content_type: str = "text/plain",
             extra: list[tuple[str, str]] | None = None):
        start_response(status, [("Content-Type", f"{content_type}; charset=utf-8"),
                                *(extra or [])])
        return [body.encode()]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if allows is not None and not allows(path, environ.get("HTTP_AUTHORIZATION")):
            return text(start_response, "401 Unauthorized", "unauthorized\n",
                        extra=[("WWW-Authenticate", 'Basic realm="kpi-exporter"')])
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
    def state(s: SourceState) -> str:
        if s.polled:
            return "up" if s.up else "down"
        return "syncing: first poll running" if s.syncing else "starting"

    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{state(s)}"
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


class _Reject(Exception):
    """A request we answer with an error status, then close the connection."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class BackgroundHttpServer:
    """Serves a WSGI app in a background thread; `.port` is the bound port."""

    def __init__(self, host: str, port: int, app: Any, *, tls: ssl.SSLContext | None = None,
                 headers: tuple[tuple[str, str], ...] = (), workers: int = 8,
                 header_timeout: float = 10.0, idle_timeout: float = 60.0,
                 write_timeout: float = 30.0, max_connections: int = 512, backlog: int = 1024,
                 max_body_bytes: int = 0, inline: bool = False):
        """`max_body_bytes`: the largest request body taken (0: GET and HEAD only).
        `inline`: call the app on the event loop's thread rather than a worker's, for an
        app that never blocks: while a poll computes, every hand-over between threads
        waits for the GIL (a scrape took a third longer through the pool). Not with
        basic auth, whose bcrypt check takes a quarter of a second."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # Bound here, so a taken port fails at once (OSError) rather than in the thread.
        self._socket = socket.create_server((host, port), family=family, backlog=backlog)
        self.host, self.port = host, self._socket.getsockname()[1]
        self.app, self.tls, self.headers = app, tls, headers
        self.header_timeout, self.idle_timeout = header_timeout, idle_timeout
        self.write_timeout, self.max_connections = write_timeout, max_connections
        self.max_body_bytes, self.inline = max_body_bytes, inline
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http-worker")
        self._loop = asyncio.new_event_loop()
        self._connections: set[asyncio.Task] = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(self) -> "BackgroundHttpServer":
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop)
            self._thread.join(10)
        else:
            self._socket.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the event loop -------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(
            self._connection, sock=self._socket, ssl=self.tls, limit=MAX_HEAD_BYTES,
            ssl_handshake_timeout=self.header_timeout if self.tls else None))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        self._loop.stop()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._connections) >= self.max_connections:
            writer.close()  # at the cap: refuse rather than queue without bound
            return
        self._connections.add(task)
        try:
            keep_alive, timeout = True, self.header_timeout
            while keep_alive:
                try:
                    request = await asyncio.wait_for(self._read_head(reader), timeout)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                        ssl.SSLError):
                    return  # too slow, gone, or not TLS: nothing worth answering
                except _Reject as reject:
                    await self._respond(writer, f"{reject.status} {_REASONS[reject.status]}",
                                        [("Content-Type", "text/plain; charset=utf-8")],
                                        b"", "GET", close=True)
                    return
                if request is None:
                    return  # the client closed between requests
                environ, keep_alive = request
                if self.inline:
                    status, headers, body = self._call(environ)
                else:
                    status, headers, body = await self._loop.run_in_executor(
                        self._pool, self._call, environ)
                await self._respond(writer, status, headers, body, environ["REQUEST_METHOD"],
                                    close=not keep_alive)
                timeout = self.idle_timeout  # a kept-alive connection waits for the next
        except (asyncio.TimeoutError, ConnectionError, ssl.SSLError):
            pass  # a client that stopped reading, or left
        finally:
            self._connections.discard(task)
            writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[dict, bool] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                return None
            raise
        except asyncio.LimitOverrunError:
            raise _Reject(431) from None
        lines = head.decode("latin-1").split("\r\n")[:-2]
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Reject(400)
        method, target, protocol = parts
        if method not in ("GET", "HEAD") and not (method == "POST" and self.max_body_bytes):
            raise _Reject(405)
        if len(lines) > MAX_HEADERS + 1:
            raise _Reject(431)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _Reject(400)
            headers[name.lower()] = value.strip()
        length = headers.get("content-length", "0")
        if not length.isdigit() or "transfer-encoding" in headers:
            raise _Reject(400 if not length.isdigit() else 413)  # no chunked bodies
        if int(length) > self.max_body_bytes:
            raise _Reject(413)
        body = await reader.readexactly(int(length)) if int(length) else b""
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": unquote(path), "QUERY_STRING": query,
            "SERVER_NAME": self.host, "SERVER_PORT": str(self.port),
            "SERVER_PROTOCOL": protocol, "wsgi.version": (1, 0), "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": length,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        connection = headers.get("connection", "").lower()
        keep_alive = protocol == "HTTP/1.1" and connection != "close" or connection == "keep-alive"
        return environ, keep_alive

    def _call(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes]:
        """Run the app in a worker thread: its status, headers and whole body."""
        answer: dict[str, Any] = {}

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, list(headers)

        try:
            result = self.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                getattr(result, "close", lambda: None)()
        except Exception:  # a bug of ours: a 500, and the traceback in the log
            log.exception("error while answering %s", environ.get("PATH_INFO"))
            return ("500 Internal Server Error",
                    [("Content-Type", "text/plain; charset=utf-8")], b"internal error\n")
        return answer["status"], answer["headers"], body

    async def _respond(self, writer: asyncio.StreamWriter, status: str,
                       headers: list[tuple[str, str]], body: bytes, method: str, *,
                       close: bool) -> None:
        names = {name.lower() for name, _ in headers}
        headers = [*headers, *self.headers]
        if "content-length" not in names:
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close" if close else "keep-alive"))
        head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
        await asyncio.wait_for(writer.drain(), self.write_timeout)
