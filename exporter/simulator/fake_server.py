"""What every fake upstream shares: a threaded HTTP server on loopback, fault
injection for tests, and a request log. A fake API subclasses `FakeServer`
and answers in `respond()`.

Fault injection: `set_latency`, `fail_next`, `rate_limit` (429 beyond N
requests in any one-second window), `serve_malformed_next`, `clear_faults`. Request log:
`requests` ((method, path, query) tuples), `bodies` (the JSON bodies of POSTs),
`request_count`, `reset_log()`; the newest 20,000 requests are kept.
"""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, dict[str, str], bytes]
LOG_SIZE = 20_000  # requests kept in the log


@dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    body: bytes


def json_body(payload: Any) -> bytes:
    # Compact JSON parses the same as pretty-printed and costs a third of the
    # time on large pages, which the demo's first poll feels.
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


class FakeServer:
    """Base of the fake APIs: lifecycle, faults and the request log."""

    name = "fake"
    server_header = "nginx"
    malformed_body = b'{\n  "items": [\n    {"id": '  # a 200 cut off mid-object

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latency = 0.0
        self._faults: collections.deque[_Fault] = collections.deque()
        self._rate: float | None = None
        self._recent: collections.deque[float] = collections.deque()
        # Bounded: a demo stack serves for weeks; tests read far fewer.
        self._log: collections.deque[tuple[str, str, dict[str, list[str]]]] = \
            collections.deque(maxlen=LOG_SIZE)
        self._bodies: collections.deque[Any] = collections.deque(maxlen=LOG_SIZE)

    # ------------------------------------------------------------------ what a fake defines

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        raise NotImplementedError

    def failure_body(self, status: int) -> Any:
        """The body `fail_next(status)` sends unless given one."""
        return {"message": "simulated failure"}

    def rate_limited(self) -> Response:
        return 429, {}, json_body({"message": "Too many requests"})

    def response_headers(self, request_headers: Any) -> dict[str, str]:
        """Headers added to every response (request ids, versions)."""
        return {}

    # ------------------------------------------------------------------ lifecycle

    def start(self):
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"{self.name}:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ fault injection

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before every response."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, count: int = 1, status: int = 500, headers: dict | None = None,
                  body: Any = None) -> None:
        """The next `count` requests get `status` (with the API's error body for it unless
        `body` is given: a dict is sent as JSON, str/bytes as is)."""
        if body is None:
            body = self.failure_body(status)
        if isinstance(body, (dict, list)):
            raw = json.dumps(body, indent=2).encode()
        else:
            raw = body.encode() if isinstance(body, str) else bytes(body)
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault(status, dict(headers or {}), raw))

    def serve_malformed_next(self, count: int = 1) -> None:
        """The next `count` requests get a 200 whose body is truncated, invalid JSON."""
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault(200, {}, self.malformed_body))

    def clear_faults(self) -> None:
        """Forget the faults not yet served and the latency: answer normally again."""
        with self._lock:
            self._faults.clear()
            self._latency = 0.0

    def rate_limit(self, requests_per_second: float | None) -> None:
        """Answer 429 beyond this many requests in any one-second window (None: off)."""
        with self._lock:
            self._rate = requests_per_second or None
            self._recent.clear()

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[tuple[str, str, dict[str, list[str]]]]:
        """(method, path, query as a dict of lists) of every request, oldest first."""
        with self._lock:
            return list(self._log)

    @property
    def bodies(self) -> list[Any]:
        """The decoded JSON bodies of the requests that had one, oldest first."""
        with self._lock:
            return list(self._bodies)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._log)

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._bodies.clear()

    # ------------------------------------------------------------------ handling

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        """One request -> (status, extra headers, body). Runs on the handler's thread."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            self._log.append((method, parts.path, query))
            if body:
                try:
                    self._bodies.append(json.loads(body))
                except ValueError:
                    self._bodies.append(body)
            latency = self._latency
            fault = self._faults.popleft() if self._faults else None
            limited = self._over_rate_limit()
        if latency:
            time.sleep(latency)
        if fault is not None:
            return fault.status, fault.headers, fault.body
        if limited:
            return self.rate_limited()
        return self.respond(method, parts.path, query, headers, body)

    def _over_rate_limit(self) -> bool:
        if self._rate is None:
            return False
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= self._rate:
            return True
        self._recent.append(now)
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) is part of the game, not a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    def version_string(self) -> str:
        return self.server.fake.server_header  # type: ignore[attr-defined]

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake = self.server.fake  # type: ignore[attr-defined]
        status, headers, payload = fake.handle(self.command, self.path, self.headers, body)
        headers = {**fake.response_headers(self.headers), **headers}
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-cache, no-store")
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read fake.requests
        pass
