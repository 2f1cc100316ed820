"""A fault-injecting HTTP proxy to put in front of a fake upstream.

It forwards every request to the fake (rewriting the fake's address in answers
to its own, so absolute next-page links and Salesforce's instance_url come back
through it) and, when told, answers wrong in one of these ways:

- "5xx", "429", "auth": that status (429 with Retry-After: 0);
- "timeout": no answer for longer than the client waits;
- "reset": the connection dropped without an answer;
- "truncated": the fake's answer cut in half;
- "drift": the fake's JSON with `drift(path, body)` applied (a field gone, a type changed);
- "endless": the first answer of each listing, with `endless(path, body)` applied
  (a next page that never ends), for every later request to that listing.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import requests

Transform = Callable[[str, Any], Any]


class FaultProxy:
    def __init__(self, upstream: str, *, drift: Transform, endless: Transform,
                 listing: Callable[[str], str] = lambda path: path, hang: float = 1.5):
        self.upstream = upstream.rstrip("/")
        self.drift, self.endless, self.listing, self.hang = drift, endless, listing, hang
        self.fault: str | None = None
        self.requests = 0
        self._first: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def set(self, fault: str | None) -> None:
        with self._lock:
            self.fault, self.requests = fault, 0
            self._first.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()

    def answer(self, handler: "_Handler", body: bytes) -> tuple[int, dict, bytes] | None:
        with self._lock:
            self.requests += 1
            fault = self.fault
        if fault == "5xx":
            return 503, {}, b'{"message": "injected outage"}'
        if fault == "429":
            return 429, {"Retry-After": "0"}, b'{"message": "injected rate limit"}'
        if fault == "auth":
            return 401, {}, b'{"message": "injected: invalid credentials"}'
        if fault == "timeout":
            time.sleep(self.hang)
            return 503, {}, b"{}"
        if fault == "reset":
            # SO_LINGER 0: close() sends a RST, as a crashed proxy or load balancer does
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
            handler.close_connection = True
            return None
        path = handler.path.split("?")[0]
        if fault == "endless":
            key = self.listing(path)
            with self._lock:
                first = self._first.get(key)
            if first is not None:
                return first[0], {}, first[1]
        status, headers, payload = self._forward(handler, body)
        if fault == "truncated":
            return status, headers, payload[: len(payload) // 2]
        if fault in ("drift", "endless") and payload.strip().startswith((b"{", b"[")):
            changed = (self.drift if fault == "drift" else self.endless)(path, json.loads(payload))
            payload = json.dumps(changed).encode()
            if fault == "endless":
                with self._lock:
                    self._first.setdefault(self.listing(path), (status, payload))
        return status, headers, payload

    def _forward(self, handler: "_Handler", body: bytes) -> tuple[int, dict, bytes]:
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
        reply = self._session.request(handler.command, self.upstream + handler.path,
                                      headers=headers, data=body or None, timeout=30)
        payload = reply.content.replace(self.upstream.encode(), self.url.encode())
        kept = {k: v for k, v in reply.headers.items()
                if k.lower() in ("retry-after", "content-type") or k.lower().startswith("x-")}
        return reply.status_code, kept, payload


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        answer = self.server.proxy.answer(self, body)  # type: ignore[attr-defined]
        if answer is None:
            return
        status, headers, payload = answer
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass
