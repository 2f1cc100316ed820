"""Talk to HubSpot's CRM v3 API: deal pipelines, deals and contacts.

- `/crm/v3/pipelines/deals`: stages with their probability and isClosed
  (metadata values are strings); won is closed at probability 1.
- Deals: the list endpoint (`GET /crm/v3/objects/deals`, 100 a page, `after`
  cursors, no result cap) for a full read; the search endpoint for changes
  since the last poll (`hs_lastmodifieddate`).
- Contacts: searches for those created, or that entered a lifecycle stage,
  since a moment.

The search API returns at most 10,000 results per query (a page beyond is a
400) and has its own limit of 5 requests a second: `search_since` sorts by
the date it filters on and, at the cap, starts a new query from the last date
seen (a time slice), and the source's client paces every request.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

from exporter.http import HttpClient
from exporter.sources.base import UpstreamDataError

LIST_PAGE = 100
SEARCH_PAGE = 200
SEARCH_CAP = 10_000  # results one search query can page through


def pipelines(client: HttpClient) -> list[dict]:
    page = client.get_json("/crm/v3/pipelines/deals")
    results = page.get("results") if isinstance(page, dict) else None
    if not isinstance(results, list):
        raise UpstreamDataError("hubspot: pipelines: 'results' is not a list")
    return results


def list_objects(client: HttpClient, kind: str, properties: list[str]) -> Iterator[dict]:
    """Every object of a kind, by the list endpoint's `after` cursor."""
    path = f"/crm/v3/objects/{kind}"
    params: dict[str, Any] = {"limit": LIST_PAGE, "properties": ",".join(properties),
                              "archived": "false"}

    def next_page(page: Any) -> tuple[str, Any] | None:
        after = ((page.get("paging") or {}).get("next") or {}).get("after")
        return (path, {**params, "after": after}) if after else None

    for page in client.paginate(path, params, next_page):
        yield from _results(page, kind)


def search_since(client: HttpClient, kind: str, date_property: str, since: int,
                 properties: list[str]) -> Iterator[dict]:
    """Objects whose `date_property` is at or after `since` (Unix seconds), oldest first,
    in time slices of fewer than 10,000 results."""
    start = since * 1000
    while True:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": [{"propertyName": date_property, "operator": "GTE",
                                           "value": str(start)}]}],
            "sorts": [{"propertyName": date_property, "direction": "ASCENDING"}],
            "properties": properties, "limit": SEARCH_PAGE,
        }
        seen = 0
        last: int | None = None
        trail = client.trail(f"/crm/v3/objects/{kind}/search")
        while True:
            trail.visit(repr(body))
            page = client.request_json("POST", f"/crm/v3/objects/{kind}/search", json=body)
            results = _results(page, kind)
            yield from results
            seen += len(results)
            if results:
                last = timestamp_ms(results[-1]["properties"].get(date_property))
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return
            if not isinstance(after, (str, int)):
                raise UpstreamDataError(f"hubspot: {kind} search: paging.next.after is {after!r}")
            if seen + SEARCH_PAGE > SEARCH_CAP:
                break  # the next page would pass the cap: a new slice
            body = {**body, "after": after}
        if last is None or last <= start:
            raise UpstreamDataError(f"hubspot: more than {SEARCH_CAP} {kind} share one "
                                    f"{date_property}; cannot slice the search")
        # Objects at exactly `last` may repeat in the next slice: callers key by id.
        start = last


def _results(page: Any, kind: str) -> list[dict]:
    results = page.get("results") if isinstance(page, dict) else None
    if not isinstance(results, list) or not all(
            isinstance(r, dict) and isinstance(r.get("id"), str)
            and isinstance(r.get("properties"), dict) for r in results):
        raise UpstreamDataError(
            f"hubspot: {kind}: 'results' are not objects with id and properties")
    return results


def timestamp_ms(value: Any) -> int | None:
    """A HubSpot datetime property (ISO 8601, or epoch milliseconds) -> Unix milliseconds."""
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise UpstreamDataError(f"hubspot: {value!r} is not a date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


def seconds(value: Any) -> int | None:
    ms = timestamp_ms(value)
    return None if ms is None else ms // 1000
