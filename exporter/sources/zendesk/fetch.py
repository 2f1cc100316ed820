"""Talk to Zendesk's Support API: the incremental ticket export and satisfaction ratings.

- `GET /api/v2/incremental/tickets/cursor.json`: every ticket changed since a
  cursor (the first call gives `start_time` instead), with its metric set
  (`include=metric_sets`), up to 1,000 a page. A page says `end_of_stream`
  when it reached the present; its `after_cursor` is where the next export
  starts. Deleted tickets come back with status "deleted". Zendesk allows 10
  export requests a minute (30 with the High Volume add-on): the source paces them.
- `GET /api/v2/satisfaction_ratings?score=received&start_time=...`: the good
  and bad ratings given since a moment, with cursor pagination.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterator

from exporter.http import HttpClient
from exporter.sources.base import UpstreamDataError

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
EXPORT_PAGE = 1000
RATINGS_PATH = "/api/v2/satisfaction_ratings"
RATINGS_PAGE = 100


def export_pages(client: HttpClient, cursor: str | None, before_request: Callable[[], Any]
                 ) -> Iterator[tuple[list[dict], list[dict], str]]:
    """(tickets, metric sets, after_cursor) of each page from `cursor` (None: from the
    beginning) to the end of the stream; `before_request` paces the calls."""
    params: dict[str, Any] = {"include": "metric_sets", "per_page": EXPORT_PAGE}
    params.update({"cursor": cursor} if cursor else {"start_time": 0})
    while True:
        before_request()
        page = client.get_json(EXPORT_PATH, params)
        if not isinstance(page, dict) or not isinstance(page.get("tickets"), list):
            raise UpstreamDataError("zendesk: the ticket export page has no 'tickets' list")
        after = page.get("after_cursor")
        if not isinstance(after, str) or not after:
            raise UpstreamDataError("zendesk: the ticket export page has no after_cursor")
        yield page["tickets"], page.get("metric_sets") or [], after
        if page.get("end_of_stream") is True:
            return
        params = {"include": "metric_sets", "per_page": EXPORT_PAGE, "cursor": after}


def ratings_since(client: HttpClient, since: int) -> Iterator[dict]:
    """Good and bad satisfaction ratings created at or after `since` (Unix seconds)."""
    params: dict[str, Any] = {"score": "received", "start_time": since,
                              "page[size]": RATINGS_PAGE}

    def next_page(page: Any) -> tuple[str, Any] | None:
        meta = page.get("meta") or {}
        if meta.get("has_more") and meta.get("after_cursor"):
            return RATINGS_PATH, {**params, "page[after]": meta["after_cursor"]}
        return None

    for page in client.paginate(RATINGS_PATH, params, next_page):
        ratings = page.get("satisfaction_ratings") if isinstance(page, dict) else None
        if not isinstance(ratings, list):
            raise UpstreamDataError("zendesk: satisfaction ratings: no 'satisfaction_ratings' list")
        yield from ratings


def seconds(value: Any, what: str) -> int | None:
    """An ISO 8601 time ("2026-11-20T10:00:00Z") as Unix seconds; None for null."""
    if value is None:
        return None
    try:
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise UpstreamDataError(f"zendesk: {what} is {value!r}, not a time") from None
