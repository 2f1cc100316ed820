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

from email.utils import format_datetime
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
    raw: dict[str, dict[str, int]] = {}
    for fields in QUERIES:
        names = [name for field in fields for name in METRICS[field]]
        for domain, values in _query(client, start, end, names, only).items():
            raw.setdefault(domain, {}).update(values)
    result = {domain: Counts(**{field: sum(values.get(n, 0) for n in group)
                                for field, group in METRICS.items()})
              for domain, values in raw.items()}
    for domain, c in result.items():
        if c.bounced_hard + c.bounced_soft + c.suppressed != c.failed_permanent:
            raise UpstreamDataError(
                f"mailgun: {domain}: {c.failed_permanent} permanent failures are not "
                f"{c.bounced_hard} hard bounces + {c.bounced_soft} soft bounces + "
                f"{c.suppressed} suppressed, as Mailgun defines them")
    return result


def _query(client: HttpClient, start: float, end: float, metrics: list[str],
           only: list[str] | None) -> dict[str, dict[str, int]]:
    """One Metrics API query, every page: {domain: {metric: count}}."""
    body: dict[str, Any] = {
        "start": rfc2822(start), "end": rfc2822(end), "resolution": "hour",
        "dimensions": ["domain"], "metrics": metrics, "include_aggregates": False,
        "pagination": {"sort": "domain:asc", "skip": 0, "limit": PAGE},
    }
    if only:
        body["filter"] = {"AND": [{"attribute": "domain", "comparator": "=",
                                   "values": [{"label": d, "value": d} for d in only]}]}
    result: dict[str, dict[str, int]] = {}
    # Pages move on by skip: a domain coming back means they loop (or overlap).
    trail = client.trail("/v1/analytics/metrics")
    while True:
        page = client.request_json("POST", "/v1/analytics/metrics", json=body)
        items = _list(page, "items", "metrics")
        for item in items:
            domain, values = _domain_values(item, metrics)
            trail.visit(domain)
            result[domain] = values
        total = (page.get("pagination") or {}).get("total")
        seen = body["pagination"]["skip"] + len(items)
        # Page on to the total Mailgun reports; without one, until a short page.
        if not items or (seen >= total if isinstance(total, int) else len(items) < PAGE):
            return result
        body["pagination"] = {**body["pagination"], "skip": seen}


def _domain_values(item: Any, metrics: list[str]) -> tuple[str, dict[str, int]]:
    if not isinstance(item, dict):
        raise UpstreamDataError("mailgun: a metrics item is not an object")
    dimensions = _list(item, "dimensions", "metrics item")
    domain = next((_string(d, "value", "dimension") for d in dimensions
                   if isinstance(d, dict) and d.get("dimension") == "domain"), None)
    if not domain:
        raise UpstreamDataError("mailgun: a metrics item has no domain dimension")
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
    return domain, values


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
