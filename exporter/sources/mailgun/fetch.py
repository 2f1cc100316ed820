"""Talk to Mailgun: sending domains, event counts per domain, suppression list sizes.

Event counts come from the Metrics API (`POST /v1/analytics/metrics`, with
the `domain` dimension; the older stats endpoints are deprecated). A query
takes at most 10 metrics, so each window is two queries, each paged with
`pagination.skip` (up to 1,000 domains a page). Suppression lists
(`/v3/{domain}/bounces|complaints|unsubscribes`) have no count endpoint, so
their pages are walked (1,000 entries a page) and counted; the `next` link's
path and query are followed on our own API host, never on the host it names.
"""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from exporter.http import HttpClient
from exporter.sources.base import UpstreamDataError
from exporter.sources.mailgun.kpis import Counts

PAGE = 1000  # the largest page the domain, suppression and metrics lists serve
METRICS_PER_QUERY = 10  # the Metrics API's limit
SUPPRESSION_LISTS = ("bounces", "complaints", "unsubscribes")

# Our counts, and the Metrics API metrics each is the sum of.
METRICS = {
    "accepted": ("accepted_outgoing_count",),
    "delivered": ("delivered_count",),
    "failed_permanent": ("permanent_failed_count",),
    "bounced_hard": ("hard_bounces_count",),
    "bounced_soft": ("soft_bounces_count",),
    "suppressed": ("suppressed_bounces_count", "suppressed_complaints_count",
                   "suppressed_unsubscribed_count"),
    "failed_temporary": ("temporary_failed_count",),
    "opened": ("opened_count",),
    "opened_unique": ("unique_opened_count",),
    "clicked": ("clicked_count",),
    "clicked_unique": ("unique_clicked_count",),
    "unsubscribed": ("unsubscribed_count",),
    "complained": ("complained_count",),
}


def rfc2822(at: float) -> str:
    """The time format the Metrics API takes: "Mon, 23 Nov 2026 10:00:00 +0000"."""
    return format_datetime(datetime.fromtimestamp(int(at), timezone.utc))


def domains(client: HttpClient) -> list[str]:
    """Every sending domain of the account (`GET /v4/domains`, paged by skip)."""
    names: list[str] = []

    def next_page(page: Any) -> tuple[str, Any] | None:
        total = page.get("total_count")
        more = bool(page.get("items")) and isinstance(total, int) and len(names) < total
        return ("/v4/domains", {"limit": PAGE, "skip": len(names)}) if more else None

    trail = client.trail("/v4/domains")  # pages move on by skip: a name twice is a loop
    for page in client.paginate("/v4/domains", {"limit": PAGE, "skip": 0}, next_page):
        for item in _list(page, "items", "domains"):
            names.append(_string(item, "name", "domain"))
            trail.visit(names[-1])
    return names


# One query per group (a query takes at most METRICS_PER_QUERY metrics). The
# permanent failures and their three parts share a query, so that one answer
# holds every term of bounced_hard + bounced_soft + suppressed = failed_permanent.
QUERIES = (("accepted", "delivered", "failed_permanent", "bounced_hard", "bounced_soft",
            "suppressed", "failed_temporary"),
           ("opened", "opened_unique", "clicked", "clicked_unique", "unsubscribed", "complained"))


def event_counts(client: HttpClient, start: float, end: float,
                 only: list[str] | None = None) -> dict[str, Counts]:
    """Counts per domain between `start` and `end` (Unix times)."""
    return {domain: counts for (_, domain), counts in _counts(client, start, end, only).items()}


def daily_event_counts(client: HttpClient, start: float, end: float,
                       only: list[str] | None = None) -> dict[int, dict[str, Counts]]:
    """Counts per UTC day (the Unix time it starts) and domain, for the days between
    `start` and `end`; a day and domain without events is absent, as Mailgun lists them."""
    result: dict[int, dict[str, Counts]] = {}
    for (day, domain), counts in _counts(client, start, end, only, by_day=True).items():
        result.setdefault(day, {})[domain] = counts
    return result


def _counts(client: HttpClient, start: float, end: float, only: list[str] | None,
            by_day: bool = False) -> dict[tuple[int | None, str], Counts]:
    raw: dict[tuple[int | None, str], dict[str, int]] = {}
    for fields in QUERIES:
        names = [name for field in fields for name in METRICS[field]]
        for key, values in _query(client, start, end, names, only, by_day).items():
            raw.setdefault(key, {}).update(values)
    result = {key: Counts(**{field: sum(values.get(n, 0) for n in group)
                             for field, group in METRICS.items()})
              for key, values in raw.items()}
    for (_, domain), c in result.items():
        if c.bounced_hard + c.bounced_soft + c.suppressed != c.failed_permanent:
            raise UpstreamDataError(
                f"mailgun: {domain}: {c.failed_permanent} permanent failures are not "
                f"{c.bounced_hard} hard bounces + {c.bounced_soft} soft bounces + "
                f"{c.suppressed} suppressed, as Mailgun defines them")
    return result


def _query(client: HttpClient, start: float, end: float, metrics: list[str],
           only: list[str] | None, by_day: bool) -> dict[tuple[int | None, str], dict[str, int]]:
    """One Metrics API query, every page: {(day or None, domain): {metric: count}}."""
    body: dict[str, Any] = {
        "start": rfc2822(start), "end": rfc2822(end), "resolution": "day" if by_day else "hour",
        "dimensions": ["time", "domain"] if by_day else ["domain"], "metrics": metrics,
        "include_aggregates": False,
        "pagination": {"sort": "domain:asc", "skip": 0, "limit": PAGE},
    }
    if only:
        body["filter"] = {"AND": [{"attribute": "domain", "comparator": "=",
                                   "values": [{"label": d, "value": d} for d in only]}]}
    result: dict[tuple[int | None, str], dict[str, int]] = {}
    # Pages move on by skip: an item coming back means they loop (or overlap).
    trail = client.trail("/v1/analytics/metrics")
    while True:
        page = client.request_json("POST", "/v1/analytics/metrics", json=body)
        items = _list(page, "items", "metrics")
        for item in items:
            key, values = _item_values(item, metrics, by_day)
            trail.visit(key)
            result[key] = values
        total = (page.get("pagination") or {}).get("total")
        seen = body["pagination"]["skip"] + len(items)
        # Page on to the total Mailgun reports; without one, until a short page.
        if not items or (seen >= total if isinstance(total, int) else len(items) < PAGE):
            return result
        body["pagination"] = {**body["pagination"], "skip": seen}


def _item_values(item: Any, metrics: list[str],
                 by_day: bool) -> tuple[tuple[int | None, str], dict[str, int]]:
    if not isinstance(item, dict):
        raise UpstreamDataError("mailgun: a metrics item is not an object")
    dimensions = [d for d in _list(item, "dimensions", "metrics item") if isinstance(d, dict)]
    domain = next((_string(d, "value", "dimension") for d in dimensions
                   if d.get("dimension") == "domain"), None)
    if not domain:
        raise UpstreamDataError("mailgun: a metrics item has no domain dimension")
    day = None
    if by_day:
        when = next((_string(d, "value", "dimension") for d in dimensions
                     if d.get("dimension") == "time"), None)
        day = _day_start(when, domain)
    found = item.get("metrics")
    if not isinstance(found, dict):
        raise UpstreamDataError(f"mailgun: metrics of {domain} are missing")
    values = {}
    for name in metrics:
        value = found.get(name)
        if value is None:  # counts are integer or null; a null or missing count is none
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UpstreamDataError(f"mailgun: {name} of {domain} is not a count")
        values[name] = value
    return (day, domain), values


def _day_start(value: str | None, domain: str) -> int:
    """A `time` dimension value of a daily item: RFC 2822, at midnight UTC."""
    try:
        at = parsedate_to_datetime(value or "").timestamp()
    except (TypeError, ValueError):
        raise UpstreamDataError(f"mailgun: a daily item of {domain} has no time (or an "
                                f"unreadable one: {str(value)[:40]!r})") from None
    if at % 86400:
        raise UpstreamDataError(f"mailgun: a daily item of {domain} starts at {value}, not at "
                                "midnight UTC")
    return int(at)


def suppression_size(client: HttpClient, domain: str, kind: str) -> int:
    """Entries in one suppression list of a domain, walking its pages."""
    path = f"/v3/{quote(domain, safe='')}/{kind}"  # an upstream-supplied name, escaped

    def next_page(page: Any) -> tuple[str, Any] | None:
        next_url = (page.get("paging") or {}).get("next")
        if len(page.get("items") or []) < PAGE or not isinstance(next_url, str):  # last page: short
            return None
        # The link's path and query, on our own host: the key goes nowhere else.
        link = urlsplit(next_url)
        if link.path.rstrip("/") != path:
            raise UpstreamDataError(f"mailgun: {kind} of {domain}: the next page is elsewhere")
        return path, parse_qsl(link.query)

    return sum(len(_list(page, "items", f"{kind} of {domain}"))
               for page in client.paginate(path, {"limit": PAGE}, next_page))


def _list(page: Any, key: str, what: str) -> list:
    value = page.get(key) if isinstance(page, dict) else None
    if value is None and isinstance(page, dict) and key in page:
        return []
    if not isinstance(value, list):
        raise UpstreamDataError(f"mailgun: {what}: '{key}' is not a list")
    return value


def _string(item: Any, key: str, what: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value:
        raise UpstreamDataError(f"mailgun: a {what} has no '{key}'")
    return value
