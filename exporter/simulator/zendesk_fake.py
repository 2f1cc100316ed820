"""A fake Zendesk Support API serving a simulated support desk over HTTP.

    desk = generate_support(seed=9, now=now)
    with FakeZendesk(desk) as fake:
        ZendeskSource(ZendeskConfig(base_url=fake.url, email=fake.email,
                                    api_token=Secret(fake.api_token)))

What it serves, at the fake's clock (the desk moves on as time passes):
- `GET /api/v2/incremental/tickets/cursor.json` (`start_time` or `cursor`,
  `per_page`, `include=metric_sets`): the desk's tickets in order of their last
  change, deleted ones with status "deleted", opaque cursors, `end_of_stream`
  once a page reaches the present, and Zendesk's limit of 10 export requests
  a minute (a 429 with `Retry-After`; `export_limit` changes it).
- Metric sets with null reply and resolution times until they happen; business
  minutes are `BUSINESS_SHARE` of calendar minutes.
- `GET /api/v2/satisfaction_ratings` (`score=received`, `start_time`,
  `page[size]`, `page[after]`): ratings 4-5 are "good", 1-3 "bad".
- HTTP Basic auth with `<email>/token:<api_token>`; a 401 otherwise.
"""

from __future__ import annotations

import base64
import collections
import math
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from exporter.simulator.fake_server import FakeServer, Response, json_body
from exporter.simulator.support_company import BUSINESS_SHARE, SupportDesk, TicketView

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
RATINGS_PATH = "/api/v2/satisfaction_ratings"
MAX_PAGE = 1000


def iso(t: int | None) -> str | None:
    return None if t is None else \
        datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode(position: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}:{position[1]}".encode()).decode()


def _decode(cursor: str) -> tuple[int, int] | None:
    try:
        updated, ticket_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return int(updated), int(ticket_id)
    except (ValueError, UnicodeDecodeError):
        return None


class FakeZendesk(FakeServer):
    name = "zendesk"

    def __init__(self, desk: SupportDesk, *, clock: Callable[[], float] = time.time,
                 email: str = "ops@example.com", api_token: str = "zd-fake-token",
                 export_limit: int | None = 10, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.desk = desk
        self.clock = clock
        self.email = email
        self.api_token = api_token
        self.export_limit = export_limit  # export requests a minute; None: no limit
        self._exports: collections.deque[float] = collections.deque()
        self._export_lock = threading.Lock()
        user = f"{email}/token:{api_token}"
        self._authorization = "Basic " + base64.b64encode(user.encode()).decode()

    def failure_body(self, status: int) -> Any:
        return {"error": "InternalError", "description": "simulated failure"}

    def rate_limited(self) -> Response:
        return 429, {"Retry-After": "1"}, json_body({"error": "TooManyRequests"})

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        if headers.get("Authorization") != self._authorization:
            return 401, {}, json_body({"error": "Couldn't authenticate you"})
        if method == "GET" and path == EXPORT_PATH:
            return self._export(query)
        if method == "GET" and path == RATINGS_PATH:
            return self._ratings(query)
        return 404, {}, json_body({"error": "InvalidEndpoint", "description": "Not found"})

    # -- the incremental export ----------------------------------------------

    def _export(self, query: dict[str, list[str]]) -> Response:
        wait = self._export_wait()
        if wait:
            return 429, {"Retry-After": str(wait)}, json_body(
                {"error": "APIRateLimitExceeded",
                 "description": "Number of allowed incremental export API requests per "
                                "minute exceeded"})
        now = int(self.clock())
        try:
            per_page = min(int(query.get("per_page", ["1000"])[0]), MAX_PAGE)
        except ValueError:
            return _invalid("per_page must be a number")
        if "cursor" in query:
            position = _decode(query["cursor"][0])
            if position is None:
                return _invalid("Invalid cursor")
        elif "start_time" in query:
            try:
                position = (int(query["start_time"][0]) - 1, math.inf)  # at or after start_time
            except ValueError:
                return _invalid("start_time must be a Unix time")
        else:
            return _invalid("start_time or cursor is required")
        entries = [entry for entry in self._changes(now) if entry[:2] > position]
        page = entries[:per_page]
        end = len(entries) <= per_page
        after = page[-1][:2] if page else position
        include = "metric_sets" in ",".join(query.get("include", []))
        payload: dict[str, Any] = {
            "tickets": [ticket for _, _, ticket, _ in page],
            "after_cursor": _encode((int(after[0]), int(min(after[1], 2**62)))),
            "before_cursor": None, "end_of_stream": end}
        payload["after_url"] = f"{self.url}{EXPORT_PATH}?cursor={payload['after_cursor']}"
        if include:
            payload["metric_sets"] = [metrics for _, _, _, metrics in page if metrics]
        return 200, {}, json_body(payload)

    def _export_wait(self) -> int:
        """Seconds until another export request is allowed (0: now), counting this one."""
        if self.export_limit is None:
            return 0
        now = time.monotonic()
        with self._export_lock:
            while self._exports and self._exports[0] <= now - 60:
                self._exports.popleft()
            if len(self._exports) >= self.export_limit:
                return max(1, math.ceil(self._exports[0] + 60 - now))
            self._exports.append(now)
            return 0

    def _changes(self, now: int) -> list[tuple[int, int, dict, dict | None]]:
        """(updated, id, ticket, metric set) of every ticket, deleted ones too, by last change."""
        entries = [(view.updated, view.id, self._ticket(view), self._metrics(view))
                   for view in self.desk.at(now)]
        entries += [(t.deleted, t.id, {"id": t.id, "status": "deleted", "priority": t.priority,
                                       "created_at": iso(t.created), "updated_at": iso(t.deleted)},
                     None) for t in self.desk.deleted_at(now)]
        return sorted(entries, key=lambda entry: entry[:2])

    @staticmethod
    def _ticket(view: TicketView) -> dict:
        return {"id": view.id, "subject": view.ticket.subject, "status": view.status,
                "priority": view.ticket.priority, "requester_email": view.ticket.requester,
                "created_at": iso(view.ticket.created), "updated_at": iso(view.updated)}

    @staticmethod
    def _metrics(view: TicketView) -> dict:
        def minutes(since: int, until: int | None) -> dict:
            if until is None:
                return {"calendar": None, "business": None}
            calendar = round((until - since) / 60)
            return {"calendar": calendar, "business": round(calendar * BUSINESS_SHARE)}

        created = view.ticket.created
        return {"id": view.id + 500_000, "ticket_id": view.id,
                "reply_time_in_minutes": minutes(created, view.first_reply),
                "full_resolution_time_in_minutes": minutes(created, view.solved),
                "solved_at": iso(view.solved), "created_at": iso(created),
                "updated_at": iso(view.updated)}

    # -- satisfaction ratings -------------------------------------------------

    def _ratings(self, query: dict[str, list[str]]) -> Response:
        now = int(self.clock())
        try:
            since = int(query.get("start_time", ["0"])[0])
            size = min(int(query.get("page[size]", ["100"])[0]), 100)
            start = int(query.get("page[after]", ["0"])[0])
        except ValueError:
            return _invalid("start_time, page[size] and page[after] are numbers")
        ratings = [{"id": view.id + 900_000, "ticket_id": view.id,
                    "score": "good" if view.rating >= 4 else "bad",
                    "created_at": iso(view.rated), "updated_at": iso(view.rated)}
                   for view in sorted(self.desk.at(now), key=lambda v: (v.rated or 0, v.id))
                   if view.rating is not None and view.rated >= since]
        page = ratings[start:start + size]
        more = start + size < len(ratings)
        return 200, {}, json_body({
            "satisfaction_ratings": page,
            "meta": {"has_more": more, "after_cursor": str(start + size) if more else None},
            "links": {"next": f"{self.url}{RATINGS_PATH}?page[after]={start + size}"
                      if more else None}})


def _invalid(description: str) -> Response:
    return 400, {}, json_body({"error": "InvalidValue", "description": description})
