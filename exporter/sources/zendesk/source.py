"""The Zendesk source: its config, the tickets it keeps between polls, and the
records it hands to the shared support math.

The first poll runs the cursor-based incremental ticket export from the
beginning (`start_time=0`: open tickets can be years old), keeping only the
tickets the KPIs need (unsolved, or created or solved in the last 30 days).
Every later poll continues from the cursor the previous one ended on, so it
reads only the tickets changed since; deleted tickets arrive with status
"deleted" and are dropped. Export requests are paced to `export_rate_limit`
a minute (Zendesk's limit is 10); a 429 is retried after its `Retry-After`.
Satisfaction ratings of the last 30 days are read again every poll (a rating
can change; the endpoint is not export-limited). A poll that fails part-way
keeps the previous tickets and cursor, so the next one repeats the changes.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from exporter.config import Section
from exporter.http import HttpClient
from exporter.ratelimit import RateLimiter
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, Registration, Sample, UpstreamDataError
from exporter.sources.helpdesk import export
from exporter.sources.helpdesk.export import HelpdeskData, HelpdeskOptions
from exporter.sources.helpdesk.tickets import PRIORITIES, Rating, Ticket
from exporter.sources.zendesk import fetch

NAME = "zendesk"
SOLVED_STATUSES = ("solved", "closed")


@dataclass(frozen=True)
class ZendeskConfig:
    base_url: str  # https://<subdomain>.zendesk.com, or base_url as given
    email: str
    api_token: Secret
    business_hours: bool = False  # the metric sets' business-hours times, not calendar
    poll_interval: float = 300.0
    export_rate_limit: float = 10.0  # export requests a minute (High Volume add-on: 30)
    rate_limit: float = 5.0  # other requests a second
    timeout: float = 30.0


_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def parse_config(section: Section) -> ZendeskConfig:
    subdomain, base_url = section.string("subdomain"), section.string("base_url")
    if (subdomain is None) == (base_url is None):
        raise section.error("subdomain", "give subdomain (example for example.zendesk.com) "
                            "or base_url, one of them")
    if subdomain is not None:
        subdomain = subdomain.strip().lower()
        if not _SUBDOMAIN.fullmatch(subdomain):
            raise section.error("subdomain", f"{subdomain!r} is not a subdomain: give the "
                                "first part of <subdomain>.zendesk.com")
        base_url = f"https://{subdomain}.zendesk.com"
    elif not base_url.startswith(("http://", "https://")):
        raise section.error("base_url", "must start with http:// or https://")
    email = section.string("email", required=True)
    if "@" not in email:
        raise section.error("email", f"{email!r} is not an email address (the agent the "
                            "API token belongs to)")
    return ZendeskConfig(
        base_url=base_url.rstrip("/"), email=email, api_token=section.secret("api_token"),
        business_hours=section.boolean("business_hours", False),
        poll_interval=section.duration("poll_interval", ZendeskConfig.poll_interval),
        export_rate_limit=section.number("export_rate_limit", ZendeskConfig.export_rate_limit,
                                         minimum=1),
        rate_limit=section.number("rate_limit", ZendeskConfig.rate_limit, minimum=0.1),
        timeout=section.duration("timeout", ZendeskConfig.timeout),
    )


def make_client(source_config: ZendeskConfig, **overrides: Any) -> HttpClient:
    # API token auth: HTTP Basic with "<email>/token" as the user name.
    user = f"{source_config.email}/token:{source_config.api_token.reveal()}"
    header = "Basic " + base64.b64encode(user.encode()).decode()
    options = {"read_timeout": source_config.timeout, "rate_limit": source_config.rate_limit,
               **overrides}
    return HttpClient(NAME, source_config.base_url, headers={"Authorization": header}, **options)


class ZendeskSource(HttpSource):
    name = NAME

    def __init__(self, source_config: ZendeskConfig, options: HelpdeskOptions = HelpdeskOptions(),
                 *, clock: Callable[[], float] = time.time, client: HttpClient | None = None,
                 export_limiter: RateLimiter | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.options = options
        self.clock = clock
        self.client = client or make_client(source_config)
        # One token at a time: export requests spread evenly over the minute.
        self.export_limiter = export_limiter or RateLimiter(
            source_config.export_rate_limit / 60, burst=1)
        self._tickets: dict[str, Ticket] = {}
        self._cursor: str | None = None  # where the next export starts; None: the beginning

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        return export.samples(NAME, self.read(now), now, self.options)

    def read(self, now: int) -> HelpdeskData:
        """Bring the kept tickets up to date from the export, and read the ratings."""
        tickets, cursor = dict(self._tickets), self._cursor
        for page, metric_sets, after in fetch.export_pages(self.client, cursor,
                                                           self.export_limiter.acquire):
            metrics = {str(m.get("ticket_id")): m for m in metric_sets if isinstance(m, dict)}
            for raw in page:
                if not isinstance(raw, dict) or raw.get("id") is None:
                    raise UpstreamDataError("zendesk: a ticket in the export has no id")
                ticket_id = str(raw["id"])
                if raw.get("status") == "deleted":
                    tickets.pop(ticket_id, None)
                    continue
                ticket = self._ticket(ticket_id, raw, metrics.get(ticket_id))
                if export.keep(ticket, now):
                    tickets[ticket_id] = ticket
                else:
                    tickets.pop(ticket_id, None)
            cursor = after
        ratings = self._ratings(now)
        tickets = {key: t for key, t in tickets.items() if export.keep(t, now)}
        self._tickets, self._cursor = tickets, cursor  # kept only once everything is good
        return HelpdeskData(list(tickets.values()), ratings)

    def _ticket(self, ticket_id: str, raw: dict, metrics: dict | None) -> Ticket:
        status = raw.get("status")
        if not isinstance(status, str) or not status:
            raise UpstreamDataError(f"zendesk: ticket {ticket_id} has no status")
        created = fetch.seconds(raw.get("created_at"), f"the created_at of ticket {ticket_id}")
        if created is None:
            raise UpstreamDataError(f"zendesk: ticket {ticket_id} has no created_at")
        priority = raw.get("priority") or "normal"  # no priority set: counted as normal
        if priority not in PRIORITIES:
            self.warn_once(f"priority:{priority}", "zendesk: tickets of priority %r are "
                           "counted as normal", priority)
            priority = "normal"
        metrics = metrics or {}  # a ticket seconds old may have no metric set yet
        clock = "business" if self.config.business_hours else "calendar"
        reply_calendar = _minutes(metrics.get("reply_time_in_minutes"), "calendar", ticket_id)
        solved = None
        if status in SOLVED_STATUSES:
            solved = fetch.seconds(metrics.get("solved_at"), f"the solved_at of ticket {ticket_id}")
        return Ticket(
            id=ticket_id, status=status, priority=priority, created=created, solved=solved,
            first_reply=None if reply_calendar is None else created + int(reply_calendar * 60),
            first_reply_seconds=_seconds(metrics.get("reply_time_in_minutes"), clock, ticket_id),
            resolution_seconds=None if solved is None else
            _seconds(metrics.get("full_resolution_time_in_minutes"), clock, ticket_id))

    def _ratings(self, now: int) -> list[Rating]:
        ratings = []
        for raw in fetch.ratings_since(self.client, now - export.LOOKBACK):
            score = raw.get("score") if isinstance(raw, dict) else None
            if score not in ("good", "bad"):
                continue  # offered but not answered
            given = fetch.seconds(raw.get("updated_at") or raw.get("created_at"),
                                  f"the time of satisfaction rating {raw.get('id')}")
            if given is None:
                raise UpstreamDataError(f"zendesk: satisfaction rating {raw.get('id')} has no time")
            ratings.append(Rating(str(raw.get("id")), given, score == "good"))
        return ratings


def _minutes(value: Any, clock: str, ticket_id: str) -> float | None:
    """One clock of a metric set's {calendar, business} minutes; None while it has none."""
    if value is None:
        return None
    minutes = value.get(clock) if isinstance(value, dict) else value
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0:
        raise UpstreamDataError(f"zendesk: ticket {ticket_id} has {clock} minutes {minutes!r}")
    return float(minutes)


def _seconds(value: Any, clock: str, ticket_id: str) -> float | None:
    minutes = _minutes(value, clock, ticket_id)
    return None if minutes is None else minutes * 60


def create(source_config: ZendeskConfig, config: Any) -> ZendeskSource:
    return ZendeskSource(source_config, export.helpdesk_options(config))


SOURCE_TYPE = Registration(parse_config, create)
