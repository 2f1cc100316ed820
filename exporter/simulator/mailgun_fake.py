"""A local HTTP server that answers like Mailgun's API, for the demo and tests.

    with FakeMailgun(MailgunAccount(seed=1)) as fake:
        requests.post(f"{fake.url}/v1/analytics/metrics", auth=("api", fake.api_key), json={...})

The account (`MailgunAccount`) has several sending domains with steady,
seeded traffic by the hour: a busy transactional domain, a marketing domain,
a newsletter domain whose deliverability is visibly the weakest (inside the
documented thresholds unless `trouble=True`: then its last 24 hours deliver
~91 % and bounce ~6 %), and a domain that sent nothing. Counts are
consistent: delivered + failed = accepted, hard bounces + soft bounces +
suppressed = failed permanently, unique opens <= opens.

Served: `POST /v1/analytics/metrics` (the `domain` dimension, alone or after
`time` with a `day` or `hour` resolution: one item per UTC bucket and domain
that had events, the bucket's start as its RFC 2822 value; the count
metrics, a `domain` filter, `pagination` skip/limit/total, `start`/`end` in
RFC 2822; hours are summed), `GET /v4/domains` (skip/limit),
`GET /v3/{domain}/bounces|complaints|unsubscribes` (`limit` up to 1,000,
absolute `paging` URLs, the next page after `address`, an empty page after
the last). A metrics query takes up to 10 metrics and 1,000 domains a page. Basic auth with user
`api`; errors as `{"message": ...}`, a bad key as 401 "Forbidden".
Simplified: no other dimensions, no rate metrics, no month resolution, no
retention limit (every past hour has traffic).
"""

from __future__ import annotations

import base64
import json
import math
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from exporter.simulator.fake_server import FakeServer, Response, json_body

HOUR = 3600
MAX_METRICS_LIMIT = 1000  # items a page
RESOLUTIONS = {"hour": HOUR, "day": 24 * HOUR}
MAX_METRICS_PER_QUERY = 10
MAX_LIST_LIMIT = 1000
COUNT_METRICS = ("accepted_outgoing_count", "delivered_count", "permanent_failed_count",
                 "hard_bounces_count", "soft_bounces_count", "suppressed_bounces_count",
                 "suppressed_complaints_count",
                 "suppressed_unsubscribed_count", "temporary_failed_count", "opened_count",
                 "unique_opened_count", "clicked_count", "unique_clicked_count",
                 "unsubscribed_count", "complained_count")


@dataclass(frozen=True)
class DomainProfile:
    name: str
    per_hour: float  # messages accepted in an average hour
    delivered: float  # shares of accepted
    bounced: float  # hard bounces
    suppressed: float
    opened: float  # shares of delivered
    clicked: float
    unsubscribed: float
    complained: float
    suppressions: tuple[int, int, int]  # bounces, complaints, unsubscribes list sizes
    soft_bounced: float = 0.002  # soft bounces that ran out of retries, a share of accepted


DOMAINS = (
    DomainProfile("mg.example.com", 900, 0.995, 0.003, 0.001, 0.45, 0.08, 0.0005, 0.0001,
                  (2350, 40, 610)),
    DomainProfile("marketing.example.com", 400, 0.988, 0.008, 0.003, 0.22, 0.035, 0.004, 0.0004,
                  (4100, 230, 3980)),
    # the weakest, yet inside every threshold by several standard deviations of a day's noise
    DomainProfile("news.example.com", 150, 0.986, 0.011, 0.003, 0.18, 0.02, 0.006, 0.0002,
                  (1830, 95, 2210)),
    DomainProfile("staging.example.com", 0, 1, 0, 0, 0, 0, 0, 0, (0, 0, 0)),
)
TROUBLE_DOMAIN = "news.example.com"
TROUBLE = {"delivered": 0.91, "bounced": 0.06, "suppressed": 0.01}  # its last 24 hours


class MailgunAccount:
    """Seeded traffic per domain and hour, and suppression lists."""

    def __init__(self, seed: int = 1, now: float | None = None, *, trouble: bool = False,
                 domains: tuple[DomainProfile, ...] = DOMAINS):
        self.seed = seed
        self.created = int(time.time() if now is None else now)
        self.trouble = trouble
        self.domains = {d.name: d for d in domains}

    def hour(self, domain: str, hour: int) -> dict[str, int]:
        """The count metrics of one domain in one hour (hour = Unix time // 3600)."""
        p = self.domains[domain]
        rng = random.Random(f"{self.seed}:{domain}:{hour}")
        daily = 0.6 + 0.8 * math.sin(math.pi * ((hour % 24) / 24))  # busier by day (UTC)
        accepted = round(p.per_hour * daily * rng.uniform(0.9, 1.1))
        shares = {"delivered": p.delivered, "bounced": p.bounced, "suppressed": p.suppressed}
        if self.trouble and domain == TROUBLE_DOMAIN and hour >= self.created // HOUR - 24:
            shares = dict(TROUBLE)
        def part(total: int, share: float) -> int:  # rounded at random: rare events add up
            exact = total * share
            return int(exact) + (rng.random() < exact - int(exact))

        delivered = part(accepted, shares["delivered"])
        bounced = min(part(accepted, shares["bounced"]), accepted - delivered)
        suppressed = min(part(accepted, shares["suppressed"]), accepted - delivered - bounced)
        opened_unique = part(delivered, p.opened)
        clicked_unique = part(delivered, p.clicked)
        unsubscribed, complained = part(delivered, p.unsubscribed), part(delivered, p.complained)
        # Drawn last, so the other counts are those of a fake without soft bounces.
        soft = min(part(accepted, p.soft_bounced), accepted - delivered - bounced - suppressed)
        permanent = bounced + soft + suppressed
        temporary = accepted - delivered - permanent
        return {
            "accepted_outgoing_count": accepted, "delivered_count": delivered,
            "permanent_failed_count": permanent, "hard_bounces_count": bounced,
            "soft_bounces_count": soft,
            "suppressed_bounces_count": suppressed // 2,
            "suppressed_complaints_count": suppressed // 6,
            "suppressed_unsubscribed_count": suppressed - suppressed // 2 - suppressed // 6,
            "temporary_failed_count": temporary,
            "opened_count": round(opened_unique * 1.6), "unique_opened_count": opened_unique,
            "clicked_count": round(clicked_unique * 1.3), "unique_clicked_count": clicked_unique,
            "unsubscribed_count": unsubscribed, "complained_count": complained,
        }

    def counts(self, domain: str, start: float, end: float) -> dict[str, int]:
        """Sums over the hours that start in [start, end), start rounded down to the hour."""
        total = dict.fromkeys(COUNT_METRICS, 0)
        for hour in range(int(start) // HOUR, math.ceil(end / HOUR)):
            for name, value in self.hour(domain, hour).items():
                total[name] += value
        return total

    def suppression_list(self, domain: str, kind: str) -> list[str]:
        size = self.domains[domain].suppressions[("bounces", "complaints", "unsubscribes").index(kind)]
        return [f"user{i:06d}@{kind}.{domain}" for i in range(size)]


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class FakeMailgun(FakeServer):
    """A Mailgun API double on 127.0.0.1 (see the module doc)."""

    name = "fake-mailgun"
    server_header = "nginx"
    malformed_body = b'{"items": [{"dimensions": [{"dimension": "domain", "val'

    def __init__(self, account: MailgunAccount, api_key: str = "key-simulator",
                 host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.account = account
        self.api_key = api_key

    def failure_body(self, status: int) -> Any:
        return "Forbidden" if status == 401 else {"message": f"simulated failure ({status})"}

    def rate_limited(self) -> Response:
        return 429, {"X-RateLimit-Reset": str(int(time.time()) + 1)}, json_body(
            {"message": "Too many requests, try again after 1 seconds"})

    def respond(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                body: bytes) -> Response:
        if not self._authorized(headers.get("Authorization")):
            return 401, {"Content-Type": "text/plain"}, b"Forbidden"
        try:
            if method == "POST" and path == "/v1/analytics/metrics":
                return 200, {}, json_body(self._metrics(body))
            if method == "GET" and path == "/v4/domains":
                return 200, {}, json_body(self._domains(query))
            parts = path.strip("/").split("/")
            if method == "GET" and len(parts) == 3 and parts[0] == "v3" \
                    and parts[2] in ("bounces", "complaints", "unsubscribes"):
                return 200, {}, json_body(self._suppressions(parts[1], parts[2], query))
            raise ApiError(404, "Not Found")
        except ApiError as err:
            return err.status, {}, json_body({"message": str(err)})

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, key = base64.b64decode(token).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == "api" and key == self.api_key

    def _metrics(self, raw: bytes) -> dict:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "invalid JSON body") from None
        now = time.time()
        end = _rfc2822(body.get("end"), "end") if body.get("end") else now
        start = _rfc2822(body.get("start"), "start") if body.get("start") else end - 7 * 24 * HOUR
        if start >= end:
            raise ApiError(400, "'start' must be before 'end'")
        dimensions = body.get("dimensions")
        if dimensions not in (["domain"], ["time", "domain"]):
            raise ApiError(400, "this simulator serves the 'domain' dimension, alone or "
                                "after 'time'")
        resolution = body.get("resolution", "day")
        if resolution not in RESOLUTIONS:
            raise ApiError(400, f"'{resolution}' is not a valid resolution")
        metrics = body.get("metrics") or []
        unknown = [m for m in metrics if m not in COUNT_METRICS]
        if unknown:
            raise ApiError(400, f"'{unknown[0]}' is not a valid metric")
        if len(metrics) > MAX_METRICS_PER_QUERY:
            raise ApiError(400, f"a query supports up to {MAX_METRICS_PER_QUERY} metrics")
        page = body.get("pagination") or {}
        skip, limit = int(page.get("skip", 0)), int(page.get("limit", 10))
        if not 1 <= limit <= MAX_METRICS_LIMIT:
            raise ApiError(400, f"pagination limit must be between 1 and {MAX_METRICS_LIMIT}")
        names = sorted(self.account.domains)
        wanted = _filtered_domains(body.get("filter"))
        if wanted is not None:
            names = [n for n in names if n in wanted]
        # One bucket for the whole range, or one per UTC day or hour starting in it.
        size = RESOLUTIONS[resolution]
        buckets = [(start, end)] if dimensions == ["domain"] else [
            (t, t + size) for t in range(int(start) // size * size, math.ceil(end), size)]
        items = []
        for bucket_start, bucket_end in buckets:
            for name in names:
                counts = self.account.counts(name, max(start, bucket_start), min(end, bucket_end))
                if not any(counts.values()):
                    continue  # Mailgun lists only dimension values that had events
                dims = [{"dimension": "domain", "value": name, "display_value": name}]
                if dimensions[0] == "time":
                    when = _format(bucket_start)
                    dims.insert(0, {"dimension": "time", "value": when, "display_value": when})
                items.append({"dimensions": dims, "metrics": {m: counts[m] for m in metrics}})
        return {"start": _format(start), "end": _format(end), "resolution": resolution,
                "dimensions": dimensions,
                "pagination": {"sort": page.get("sort", ""), "skip": skip, "limit": limit,
                               "total": len(items)},
                "items": items[skip:skip + limit], "aggregates": {"metrics": {}}}

    def _domains(self, query: dict[str, list[str]]) -> dict:
        limit = int(query.get("limit", ["100"])[0])
        skip = int(query.get("skip", ["0"])[0])
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
        names = sorted(self.account.domains)
        return {"total_count": len(names), "items": [
            {"name": n, "state": "active", "type": "custom", "is_disabled": False,
             "created_at": _format(self.account.created - 400 * 24 * HOUR), "spam_action": "disabled",
             "smtp_login": f"postmaster@{n}", "wildcard": False}
            for n in names[skip:skip + limit]]}

    def _suppressions(self, domain: str, kind: str, query: dict[str, list[str]]) -> dict:
        if domain not in self.account.domains:
            raise ApiError(404, "Domain not found")
        limit = int(query.get("limit", ["100"])[0])
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ApiError(400, f"limit must be between 1 and {MAX_LIST_LIMIT}")
        entries = self.account.suppression_list(domain, kind)
        after = query.get("address", [None])[0] if query.get("page", [""])[0] == "next" else None
        first = 0 if after is None else next((i + 1 for i, a in enumerate(entries) if a == after),
                                             len(entries))
        page = entries[first:first + limit]
        base = f"{self.url}/v3/{domain}/{kind}"
        last = page[-1] if page else (after or "")
        return {
            "items": [{"address": a, "created_at": _format(self.account.created - 86400),
                       **({"code": "550", "error": "No such mailbox"} if kind == "bounces" else {})}
                      for a in page],
            "paging": {"first": f"{base}?limit={limit}",
                       "last": f"{base}?page=last&limit={limit}",
                       "next": f"{base}?page=next&address={last}&limit={limit}",
                       "previous": f"{base}?page=previous&address={page[0] if page else ''}"
                                   f"&limit={limit}"},
        }


def _filtered_domains(spec: Any) -> set[str] | None:
    if not spec:
        return None
    try:
        return {v["value"] for p in spec["AND"] if p["attribute"] == "domain" for v in p["values"]}
    except (KeyError, TypeError):
        raise ApiError(400, "invalid filter") from None


def _rfc2822(value: Any, name: str) -> float:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        raise ApiError(400, f"'{name}' must be an RFC 2822 date") from None


def _format(at: float) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(at))
