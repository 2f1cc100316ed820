"""Talk to Zendesk's Support API: the incremental ticket export and satisfaction ratings.

- `GET /api/v2/incremental/tickets/cursor.json`: every ticket changed since a
  cursor (the first call gives `start_time` instead), with its metric set
  (`include=metric_sets`), up to 1,000 a page. A page says `end_of_stream`
  when it reached the present; its `after_cursor` is where the next page, or
  the next export, starts. Deleted tickets come back with status "deleted".
  Zendesk allows 10 export requests a minute (30 with the High Volume add-on):
  the caller paces them through `before_request`.
- `GET /api/v2/search/export.json?query=type:ticket status<solved`: every
  unsolved ticket (without its metric set), 1,000 a page with cursor pagination;
  the first poll's backlog, however long ago a ticket last changed.
- `GET /api/v2/satisfaction_ratings?score=received&start_time=...`: the good
  and bad ratings created since a moment, 100 a page with cursor pagination
  (`meta.has_more`, `meta.after_cursor`).

Both check the shape of what they page through (a page they cannot continue
from is an UpstreamDataError); the fields of each object are the source's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

from exporter.http import HttpClient
from exporter.sources.base import UpstreamDataError

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
EXPORT_PAGE = 1000  # the export's largest page
RATINGS_PATH = "/api/v2/satisfaction_ratings"
RATINGS_PAGE = 100  # cursor pagination's largest page
SEARCH_EXPORT_PATH = "/api/v2/search/export.json"
SEARCH_EXPORT_PAGE = 1000
UNSOLVED = "type:ticket status<solved"


@dataclass(frozen=True)
class ExportPage:
    tickets: list[Any]
    metric_sets: list[Any]
    # Where the next page or export starts; None if Zendesk sent none on the last
    # page (then the caller keeps the cursor it started from).
    after_cursor: str | None


def export_pages(client: HttpClient, cursor: str | None, before_request: Callable[[], Any],
                 start_time: int = 0) -> Iterator[ExportPage]:
    """Each page of the ticket export from `cursor` (None: from `start_time`, the
    tickets changed since then) to the end of the stream; `before_request()` runs
    before every request."""
    base = {"include": "metric_sets", "per_page": EXPORT_PAGE}
    params = {**base, "cursor": cursor} if cursor else {**base, "start_time": start_time}
    trail = client.trail(EXPORT_PATH)
    while True:
        trail.visit(repr(params))
        before_request()
        page = client.get_json(EXPORT_PATH, params)
        if not isinstance(page, dict) or not isinstance(page.get("tickets"), list):
            raise UpstreamDataError("zendesk: a ticket export page has no 'tickets' list")
        metric_sets = page.get("metric_sets")
        if metric_sets is None:
            metric_sets = []
        elif not isinstance(metric_sets, list):
            raise UpstreamDataError("zendesk: a ticket export page's 'metric_sets' is not a list")
        end = page.get("end_of_stream")
        if not isinstance(end, bool):
            raise UpstreamDataError("zendesk: a ticket export page has no end_of_stream flag")
        after = page.get("after_cursor")
        if after is not None and (not isinstance(after, str) or not after):
            raise UpstreamDataError(f"zendesk: a ticket export page's after_cursor is {after!r}")
        if not end and after is None:
            raise UpstreamDataError("zendesk: the ticket export is not at its end but gives "
                                    "no after_cursor to continue from")
        yield ExportPage(page["tickets"], metric_sets, after)
        if end:
            return
        params = {**base, "cursor": after}


def unsolved_tickets(client: HttpClient) -> Iterator[Any]:
    """Every ticket not solved or closed, from the search export (which, unlike the
    plain search, has no cap of 1,000 results)."""
    params = {"query": UNSOLVED, "filter[type]": "ticket", "page[size]": SEARCH_EXPORT_PAGE}
    for page in client.paginate(SEARCH_EXPORT_PATH, params,
                                _cursor_pages(SEARCH_EXPORT_PATH, params, "unsolved tickets")):
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(results, list):
            raise UpstreamDataError("zendesk: a search export page has no 'results' list")
        yield from results


def _cursor_pages(path: str, params: dict[str, Any], what: str
                  ) -> Callable[[dict], tuple[str, Any] | None]:
    """The next page of a list with cursor pagination (`meta.has_more`, `meta.after_cursor`)."""
    def next_page(page: dict) -> tuple[str, Any] | None:
        meta = page.get("meta")
        if not isinstance(meta, dict) or not meta.get("has_more"):
            return None
        after = meta.get("after_cursor")
        if not isinstance(after, str) or not after:
            raise UpstreamDataError(f"zendesk: {what} say has_more but give no after_cursor")
        return path, {**params, "page[after]": after}

    return next_page


def ratings_since(client: HttpClient, since: int) -> Iterator[Any]:
    """The good and bad satisfaction ratings created at or after `since` (Unix seconds)."""
    params: dict[str, Any] = {"score": "received", "start_time": since,
                              "page[size]": RATINGS_PAGE}
    next_page = _cursor_pages(RATINGS_PATH, params, "satisfaction ratings")
    for page in client.paginate(RATINGS_PATH, params, next_page):
        ratings = page.get("satisfaction_ratings") if isinstance(page, dict) else None
        if not isinstance(ratings, list):
            raise UpstreamDataError("zendesk: a satisfaction ratings page has no "
                                    "'satisfaction_ratings' list")
        yield from ratings


def seconds(value: Any, what: str) -> int | None:
    """An ISO 8601 time ("2026-11-20T10:00:00Z") as Unix seconds; None for null.
    A time without an offset is UTC, as every time Zendesk sends is."""
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UpstreamDataError(f"zendesk: {what} is {value!r}, not a time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())
