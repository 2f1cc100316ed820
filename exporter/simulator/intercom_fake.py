"""A fake Intercom REST API (version 2.16) serving a simulated support desk over HTTP.

    desk = generate_support(seed=10, now=now)
    with FakeIntercom(desk) as fake:
        IntercomSource(IntercomConfig(access_token=Secret(fake.access_token), base_url=fake.url))

What it serves, at the fake's clock (the desk moves on as time passes):
`POST /conversations/search` with the query language's filters (fields
`id`, `state`, `created_at`, `updated_at`; operators `=`, `!=`, `>`, `<`,
`IN`, `NIN`) nested under `AND` / `OR`, `per_page` up to 150 and opaque
`starting_after` cursors. A ticket is a conversation: new and open are
`open`, pending and hold `snoozed`, solved and closed `closed`; urgent and
high are `priority`; statistics are null until their moment; a rating of
1-5; deleted tickets are gone. Bearer auth; an `Intercom-Version` other than
the known ones is a 400; `rate_limit()` answers 429 with `X-RateLimit-*` and
`Retry-After`.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable

from exporter.simulator.fake_server import FakeServer, Response, json_body
from exporter.simulator.support_company import SupportDesk, TicketView

SEARCH_PATH = "/conversations/search"
VERSIONS = ("2.14", "2.15", "2.16", "Unstable")
MAX_PAGE = 150
STATES = {"new": "open", "open": "open", "pending": "snoozed", "hold": "snoozed",
          "solved": "closed", "closed": "closed"}


def _errors(status: int, code: str, message: str) -> Response:
    return status, {}, json_body({"type": "error.list", "request_id": "fake",
                                  "errors": [{"code": code, "message": message}]})


class FakeIntercom(FakeServer):
    name = "intercom"

    def __init__(self, desk: SupportDesk, *, clock: Callable[[], float] = time.time,
                 access_token: str = "ic-fake-token", host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.desk = desk
        self.clock = clock
        self.access_token = access_token
        self.versions_seen: list[str | None] = []

    def failure_body(self, status: int) -> Any:
        return {"type": "error.list", "errors": [{"code": "server_error",
                                                  "message": "simulated failure"}]}

    def rate_limited(self) -> Response:
        reset = int(time.time()) + 1
        status, _, body = _errors(429, "rate_limit_exceeded", "Exceeded rate limit")
        return status, {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(reset), "Retry-After": "1"}, body

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        if headers.get("Authorization") != f"Bearer {self.access_token}":
            return _errors(401, "unauthorized", "Access Token Invalid")
        version = headers.get("Intercom-Version")
        self.versions_seen.append(version)
        if version is not None and version not in VERSIONS:
            return _errors(400, "intercom_version_invalid", "The requested version could not "
                           f"be found: {version}")
        if method == "POST" and path == SEARCH_PATH:
            return self._search(body)
        return _errors(404, "not_found", "Resource Not Found")

    def _search(self, body: bytes) -> Response:
        try:
            request = json.loads(body or b"{}")
            query = request["query"]
            pagination = request.get("pagination") or {}
            per_page = min(int(pagination.get("per_page", 20)), MAX_PAGE)
            start = int(base64.urlsafe_b64decode(pagination["starting_after"]).decode()) \
                if pagination.get("starting_after") else 0
            conversations = [self._conversation(view)
                             for view in sorted(self.desk.at(int(self.clock())),
                                                key=lambda v: v.id)]
            found = [c for c in conversations if _matches(query, c)]
        except (ValueError, KeyError, TypeError) as exc:
            return _errors(400, "parameter_invalid", f"Invalid query: {exc}")
        page = found[start:start + per_page]
        following = start + per_page
        pages: dict[str, Any] = {"type": "pages", "page": start // per_page + 1,
                                 "per_page": per_page,
                                 "total_pages": max(1, -(-len(found) // per_page))}
        if following < len(found):
            pages["next"] = {"per_page": per_page, "starting_after":
                             base64.urlsafe_b64encode(str(following).encode()).decode()}
        return 200, {}, json_body({"type": "conversation.list", "conversations": page,
                                   "total_count": len(found), "pages": pages})

    @staticmethod
    def _conversation(view: TicketView) -> dict:
        ticket = view.ticket
        state = STATES[view.status]
        replied = view.first_reply
        statistics = None
        if replied is not None or view.solved is not None:  # fresh: no statistics yet
            statistics = {
                "type": "conversation_statistics",
                "first_contact_reply_at": ticket.created,
                "first_admin_reply_at": replied,
                "time_to_admin_reply": None if replied is None else replied - ticket.created,
                "first_close_at": view.solved, "last_close_at": view.solved,
                "time_to_first_close": None if view.solved is None else view.solved - ticket.created,
                "time_to_last_close": None if view.solved is None else view.solved - ticket.created,
            }
        rating = None
        if view.rating is not None:
            rating = {"rating": view.rating, "remark": "", "created_at": view.rated,
                      "updated_at": view.rated}
        return {"type": "conversation", "id": str(ticket.id), "title": ticket.subject,
                "created_at": ticket.created, "updated_at": view.updated,
                "state": state, "open": state == "open", "read": True,
                "priority": "priority" if ticket.priority in ("urgent", "high") else "not_priority",
                "statistics": statistics, "conversation_rating": rating}


def _matches(query: dict, conversation: dict) -> bool:
    """The search query language's subset: nested AND/OR over single-field filters."""
    operator = query["operator"]
    if operator in ("AND", "OR"):
        parts = [_matches(part, conversation) for part in query["value"]]
        return all(parts) if operator == "AND" else any(parts)
    field, value = query["field"], query["value"]
    if field not in ("id", "state", "created_at", "updated_at"):
        raise ValueError(f"field {field!r} is not searchable here")
    have = conversation[field]
    if operator == "=":
        return have == value
    if operator == "!=":
        return have != value
    if operator == ">":
        return have > int(value)
    if operator == "<":
        return have < int(value)
    if operator == "IN":
        return have in value
    if operator == "NIN":
        return have not in value
    raise ValueError(f"operator {operator!r} is not supported")
