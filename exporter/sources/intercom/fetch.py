"""Talk to Intercom's conversation search (API version 2.16).

`POST /conversations/search` takes a query (a filter, or `{"operator": "AND"
| "OR", "value": [filters]}`) and `pagination: {per_page, starting_after}`;
each page has `conversations` and, while more follow, `pages.next.starting_after`.
Every request sends `Intercom-Version`.
"""

from __future__ import annotations

from typing import Any, Iterator

from exporter.http import HttpClient
from exporter.sources.base import UpstreamDataError

SEARCH_PATH = "/conversations/search"
PAGE = 150  # the search API's largest page


def search(client: HttpClient, query: dict) -> Iterator[dict]:
    """Every conversation the query matches, page by page."""
    pagination: dict[str, Any] = {"per_page": PAGE}
    trail = client.trail(SEARCH_PATH)
    while True:
        trail.visit(repr(pagination))
        page = client.request_json("POST", SEARCH_PATH,
                                   json={"query": query, "pagination": pagination})
        conversations = page.get("conversations") if isinstance(page, dict) else None
        if not isinstance(conversations, list):
            raise UpstreamDataError("intercom: a conversation search page has no "
                                    "'conversations' list")
        yield from conversations
        following = ((page.get("pages") or {}).get("next") or {}).get("starting_after")
        if not following:
            return
        if not isinstance(following, str):
            raise UpstreamDataError(f"intercom: pages.next.starting_after is {following!r}")
        pagination = {"per_page": PAGE, "starting_after": following}


def updated_since(since: int) -> dict:
    return {"field": "updated_at", "operator": ">", "value": since}


def open_or_updated_since(since: int) -> dict:
    """The full read: every conversation not closed, and every one changed since `since`."""
    return {"operator": "OR", "value": [{"field": "state", "operator": "!=", "value": "closed"},
                                        updated_since(since)]}
