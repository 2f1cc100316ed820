"""A fake Zendesk Support API serving a simulated support desk over HTTP.

    desk = generate_support(seed=9, now=now)
    with FakeZendesk(desk) as fake:
        ZendeskSource(ZendeskConfig(base_url=fake.url, email=fake.email,
                                    api_token=Secret(fake.api_token)))

What it serves, at the fake's clock (the desk moves on as time passes):
- `GET /api/v2/incremental/tickets/cursor.json` (`start_time` or `cursor`,
  `per_page` up to 1,000, `include=metric_sets`): the desk's tickets in order
  of their last change, (updated, id), deleted ones with status "deleted";
  opaque cursors (the base64 of the position of a page's last ticket),
  `end_of_stream` once a page reaches the present, and Zendesk's limit of 10
  export requests a minute of real time (a 429 with `Retry-After`;
  `export_limit` changes it, None lifts it). Unlike Zendesk it does not hold
  back the last minute's changes, so a test can compare with `desk.at(now)`.
- Metric sets with null reply and resolution times and `solved_at` until they
  happen, in whole minutes; business minutes are `BUSINESS_SHARE` of calendar
  minutes.
- `GET /api/v2/satisfaction_ratings` (`score=received|good|bad`, `start_time`
  on when a rating was created, `page[size]` up to 100, `page[after]`): ratings
  4-5 are "good", 1-3 "bad", with cursor pagination (`meta`, `links`).
- `GET /api/v2/search/export.json` (`query=type:ticket status<solved`, the one
  query the source sends, `filter[type]=ticket`, `page[size]` up to 1,000,
  `page[after]`): the unsolved tickets by id, with cursor pagination (`meta`,
  `links`); any other query is a 400.
- HTTP Basic auth with `<email>/token:<api_token>`; a 401 otherwise. Errors in
  Zendesk's shape: `{"error": ..., "description": ...}`.
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
SEARCH_EXPORT_PATH = "/api/v2/search/export.json"
UNSOLVED_QUERY = {"type:ticket", "status<solved"}  # the terms of the one search served
MAX_PAGE = 1000  # the export's largest page, and the search export's
MAX_RATINGS_PAGE = 100
# score= values: which ratings each one lists (the desk only has answered ratings).
SCORES = {"received": ("good", "bad"), "good": ("good",), "bad": ("bad",),
          "offered": (), "unoffered": ()}

Position = tuple[int, int]  # (updated or rated, id): where a cursor points


def iso(t: int | None) -> str | None:
    return None if t is None else \
        datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(position: Position) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}:{position[1]}".encode()).decode()


def decode_cursor(cursor: str) -> Position | None:
    try:
        moment, item_id = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return int(moment), int(item_id)
    except (ValueError, UnicodeDecodeError):
        return None


class FakeZendesk(FakeServer):
    name = "zendesk"

    def __init__(self, desk: SupportDesk, *, clock: Callable[[], float] = time.time,
                 email: str = "ops@example.com", api_token: str = "zd-fake-token",
                 export_limit: int | None = 10, limit_clock: Callable[[], float] = time.monotonic,
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.desk = desk
        self.clock = clock  # the desk's time: what the export and ratings show
        self.email = email
        self.api_token = api_token
        self.export_limit = export_limit  # export requests a minute; None: no limit
        self._limit_clock = limit_clock  # real time, for the export limit's minute
        self._exports: collections.deque[float] = collections.deque()
        self._export_lock = threading.Lock()
        user = f"{email}/token:{api_token}"
        self._authorization = "Basic " + base64.b64encode(user.encode()).decode()

    def failure_body(self, status: int) -> Any:
        return {"error": "InternalError" if status >= 500 else "InvalidValue",
                "description": "simulated failure"}

    def rate_limited(self) -> Response:
        return 429, {"Retry-After": "1"}, json_body(
            {"error": "TooManyRequests", "description": "Rate limit exceeded"})

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        if headers.get("Authorization") != self._authorization:
            return 401, {}, json_body({"error": "Couldn't authenticate you"})
        if method == "GET" and path == EXPORT_PATH:
            return self._export(query)
        if method == "GET" and path == RATINGS_PATH:
            return self._ratings(query)
        if method == "GET" and path == SEARCH_EXPORT_PATH:
            return self._search_export(query)
        return 404, {}, json_body({"error": "InvalidEndpoint", "description": "Not found"})

    # -- the incremental export ----------------------------------------------

    def _export(self, query: dict[str, list[str]]) -> Response:
        wait = self._export_wait()
        if wait:
            return 429, {"Retry-After": str(wait)}, json_body(
                {"error": "APIRateLimitExceeded",
                 "description": "Number of allowed incremental export API requests per "
                                "minute exceeded"})
        per_page = _whole(query, "per_page", MAX_PAGE)
        if per_page is None or not 1 <= per_page <= MAX_PAGE:
            return _invalid(f"per_page must be 1 to {MAX_PAGE}")
        if "cursor" in query:
            position = decode_cursor(query["cursor"][0])
            if position is None:
                return _invalid("Invalid cursor")
        elif "start_time" in query:
            start = _whole(query, "start_time", 0)
            if start is None:
                return _invalid("start_time must be a Unix time")
            position = (start - 1, 2**62)  # everything changed at or after start_time
        else:
            return _invalid("start_time or cursor is required")
        entries = [entry for entry in self._changes(int(self.clock())) if entry[:2] > position]
        page = entries[:per_page]
        after = encode_cursor(page[-1][:2] if page else position)
        payload: dict[str, Any] = {
            "tickets": [ticket for _, _, ticket, _ in page],
            "after_cursor": after, "after_url": f"{self.url}{EXPORT_PATH}?cursor={after}",
            "before_cursor": None, "before_url": None,
            "end_of_stream": len(entries) <= per_page}
        if "metric_sets" in ",".join(query.get("include", [])).split(","):
            payload["metric_sets"] = [metrics for _, _, _, metrics in page if metrics]
        return 200, {}, json_body(payload)

    def _export_wait(self) -> int:
        """Seconds until another export request is allowed (0: now, and it is counted)."""
        if self.export_limit is None:
            return 0
        now = self._limit_clock()
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
        entries += [(t.deleted, t.id, {"id": t.id, "url": self._ticket_url(t.id),
                                       "status": "deleted", "priority": t.priority,
                                       "subject": t.subject, "created_at": iso(t.created),
                                       "updated_at": iso(t.deleted)}, None)
                    for t in self.desk.deleted_at(now)]
        return sorted(entries, key=lambda entry: entry[:2])

    def _ticket_url(self, ticket_id: int) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}.json"

    def _ticket(self, view: TicketView) -> dict:
        return {"id": view.id, "url": self._ticket_url(view.id), "subject": view.ticket.subject,
                "status": view.status, "priority": view.ticket.priority,
                "requester_email": view.ticket.requester, "created_at": iso(view.ticket.created),
                "updated_at": iso(view.updated)}

    @staticmethod
    def _metrics(view: TicketView) -> dict:
        def minutes(since: int, until: int | None) -> dict:
            if until is None:
                return {"calendar": None, "business": None}
            calendar = round((until - since) / 60)
            return {"calendar": calendar, "business": round(calendar * BUSINESS_SHARE)}

        created = view.ticket.created
        resolution = minutes(created, view.solved)
        return {"id": view.id + 500_000, "ticket_id": view.id,
                "replies": 0 if view.first_reply is None else 1, "reopens": 0,
                "reply_time_in_minutes": minutes(created, view.first_reply),
                # The desk's tickets are never reopened: the first solve is the last.
                "first_resolution_time_in_minutes": resolution,
                "full_resolution_time_in_minutes": resolution,
                "solved_at": iso(view.solved), "created_at": iso(created),
                "updated_at": iso(view.updated)}

    # -- the search export -----------------------------------------------------

    def _search_export(self, query: dict[str, list[str]]) -> Response:
        terms = set(query.get("query", [""])[0].split())
        if query.get("filter[type]") != ["ticket"]:
            return _invalid("filter[type] is required: ticket, organization, user or group")
        if terms != UNSOLVED_QUERY:
            return _invalid(f"this fake answers only the query {' '.join(sorted(UNSOLVED_QUERY))}")
        size = _whole(query, "page[size]", 100)
        if size is None or not 1 <= size <= MAX_PAGE:
            return _invalid(f"page[size] must be 1 to {MAX_PAGE}")
        after = 0
        if "page[after]" in query:
            position = decode_cursor(query["page[after]"][0])
            if position is None:
                return _invalid("Invalid page[after] cursor")
            after = position[1]
        unsolved = sorted((view for view in self.desk.at(int(self.clock()))
                           if view.status not in ("solved", "closed") and view.id > after),
                          key=lambda view: view.id)
        page, more = unsolved[:size], len(unsolved) > size
        cursor = encode_cursor((0, page[-1].id)) if page else None
        following = None
        if more:
            following = (f"{self.url}{SEARCH_EXPORT_PATH}?filter[type]=ticket"
                         f"&page[size]={size}&page[after]={cursor}")
        return 200, {}, json_body({
            "results": [{**self._ticket(view), "result_type": "ticket"} for view in page],
            "meta": {"has_more": more, "after_cursor": cursor, "before_cursor": None},
            "links": {"next": following, "prev": None}})

    # -- satisfaction ratings -------------------------------------------------

    def _ratings(self, query: dict[str, list[str]]) -> Response:
        score = query.get("score", ["received"])[0]
        since = _whole(query, "start_time", 0)
        size = _whole(query, "page[size]", MAX_RATINGS_PAGE)
        if score not in SCORES:
            return _invalid(f"score must be one of {', '.join(SCORES)}")
        if since is None or size is None or not 1 <= size <= MAX_RATINGS_PAGE:
            return _invalid(f"start_time is a Unix time; page[size] is 1 to {MAX_RATINGS_PAGE}")
        position: Position = (since - 1, 2**62)
        if "page[after]" in query:
            position = decode_cursor(query["page[after]"][0])
            if position is None:
                return _invalid("Invalid page[after] cursor")
        ratings = sorted(
            ((view.rated, view.id, view.rating) for view in self.desk.at(int(self.clock()))
             if view.rating is not None and view.rated >= since),
            key=lambda entry: entry[:2])
        ratings = [entry for entry in ratings
                   if entry[:2] > position and _score(entry[2]) in SCORES[score]]
        page, more = ratings[:size], len(ratings) > size
        after = encode_cursor(page[-1][:2]) if page else None
        following = None
        if more:
            following = (f"{self.url}{RATINGS_PATH}?score={score}&start_time={since}"
                         f"&page[size]={size}&page[after]={after}")
        return 200, {}, json_body({
            "satisfaction_ratings": [
                {"id": ticket_id + 900_000, "ticket_id": ticket_id, "score": _score(rating),
                 "comment": None, "created_at": iso(rated), "updated_at": iso(rated)}
                for rated, ticket_id, rating in page],
            "meta": {"has_more": more, "after_cursor": after,
                     "before_cursor": encode_cursor(page[0][:2]) if page else None},
            "links": {"next": following, "prev": None}})


def _score(rating: int) -> str:
    return "good" if rating >= 4 else "bad"


def _whole(query: dict[str, list[str]], name: str, default: int) -> int | None:
    """A whole-number query parameter; None when it is not one."""
    try:
        return int(query[name][0]) if name in query else default
    except ValueError:
        return None


def _invalid(description: str) -> Response:
    return 400, {}, json_body({"error": "InvalidValue", "description": description})
