"""`kpi-exporter alert-sink`: a receiver that shows what Alertmanager would have sent.

The demo stack routes every Alertmanager receiver (finance-critical,
engineering-warning, ...) to this webhook, so a user can watch an alert travel
without a PagerDuty or Slack account. It logs one line per alert and keeps
the latest notifications:

    POST /alerts         Alertmanager's webhook payload (version 4)
    GET  /notifications  what arrived, newest last, as JSON
    GET  /               the same as a page
    GET  /healthz        liveness
"""

from __future__ import annotations

import collections
import html
import json
import logging
import threading

from exporter.server import BackgroundHttpServer

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:19878"
MAX_BODY = 1 << 20  # Alertmanager batches alerts; a megabyte is plenty
KEEP = 200


class AlertSink:
    """The notifications received so far, and the WSGI app that receives them."""

    def __init__(self, keep: int = KEEP):
        self._lock = threading.Lock()
        self._received: collections.deque[dict] = collections.deque(maxlen=keep)

    def notifications(self) -> list[dict]:
        with self._lock:
            return list(self._received)

    def receive(self, payload: dict) -> None:
        alerts = payload.get("alerts") if isinstance(payload, dict) else None
        if not isinstance(payload.get("receiver") if isinstance(payload, dict) else None, str) \
                or not isinstance(alerts, list) or not all(_is_alert(a) for a in alerts):
            raise ValueError("not an Alertmanager webhook payload (receiver, alerts)")
        with self._lock:
            self._received.append(payload)
        for alert in alerts:
            labels = alert.get("labels") or {}
            shown = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
            summary = (alert.get("annotations") or {}).get("summary", "")
            log.info("%s -> %s: %s %s %s", alert.get("status", "?").upper(), payload["receiver"],
                     labels.get("alertname", "?"), shown, summary)

    def app(self, environ, start_response):
        path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")

        def reply(status: str, body: str, content_type: str = "text/plain"):
            start_response(status, [("Content-Type", f"{content_type}; charset=utf-8")])
            return [body.encode()]

        if path == "/alerts" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                return reply("400 Bad Request", f"expected a JSON body of 1 to {MAX_BODY} bytes\n")
            try:
                self.receive(json.loads(environ["wsgi.input"].read(length)))
            except (ValueError, UnicodeDecodeError) as exc:
                return reply("400 Bad Request", f"{exc}\n")
            return reply("200 OK", "ok\n")
        if method != "GET":
            return reply("405 Method Not Allowed", "POST goes to /alerts\n")
        if path == "/notifications":
            return reply("200 OK", json.dumps(self.notifications(), indent=1), "application/json")
        if path == "/healthz":
            return reply("200 OK", "ok\n")
        if path == "/":
            return reply("200 OK", self._page(), "text/html")
        return reply("404 Not Found", "not found\n")

    def _page(self) -> str:
        rows = []
        for payload in reversed(self.notifications()):
            for alert in payload["alerts"]:
                labels = alert.get("labels") or {}
                rows.append("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
                    alert.get("startsAt", ""), payload["receiver"], alert.get("status", ""),
                    labels.get("alertname", ""), labels.get("severity", ""),
                    (alert.get("annotations") or {}).get("summary", ""))) + "</tr>")
        return ("<!doctype html><html><head><title>kpi-exporter alert sink</title>"
                '<meta http-equiv="refresh" content="15"></head><body>'
                "<h1>Notifications Alertmanager sent</h1>"
                "<table><tr><th>Since</th><th>Receiver</th><th>Status</th><th>Alert</th>"
                "<th>Severity</th><th>Summary</th></tr>" + "".join(rows) + "</table>"
                "</body></html>\n")


def _is_alert(alert: object) -> bool:
    return isinstance(alert, dict) and all(
        isinstance(alert.get(key, {}), dict) for key in ("labels", "annotations"))


def serve(host: str, port: int) -> tuple[AlertSink, BackgroundHttpServer]:
    sink = AlertSink()
    return sink, BackgroundHttpServer(host, port, sink.app, max_body_bytes=MAX_BODY).start()
