"""The Zendesk source: its config, the tickets it keeps between polls, and the
records it hands to the shared support math.

The KPIs need the tickets still unsolved and those created or solved in the
last 30 days (`export.keep`). The first poll reads the unsolved ones from the
search export (an open ticket can be years old), then runs the cursor-based
incremental ticket export from 30 days ago: every ticket changed since,
replacing what the search found. A ticket unsolved but unchanged for 30 days
has no reply or solve in any window, so its metric set is not needed. Every
later poll continues from the cursor the previous one ended on, so it reads
only the tickets changed since and merges them in by id; a ticket that comes
back with status "deleted" is dropped. Each exported ticket's times come from
its metric set, sideloaded on the same page.

Export requests are spread to `export_rate_limit` a minute (Zendesk allows 10;
the waits count in the source's rate-limit wait), and a 429 is retried after
its `Retry-After` by the HTTP client. Satisfaction ratings of the last 30 days
are read again every poll: a customer can change theirs, and the ratings
endpoint can only filter on when a rating was created.

A poll that fails part-way (an HTTP error, a malformed page or ticket) keeps
the previous tickets and cursor, so the next poll repeats the same changes.
"""

from __future__ import annotations

import base64
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from exporter.config import PollLimits, Section
from exporter.labels import OTHER
from exporter.http import HttpClient
from exporter.ratelimit import RateLimiter
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, http_client, Registration, Sample, UpstreamDataError
from exporter.sources.helpdesk import export
from exporter.sources.helpdesk.export import HelpdeskData, HelpdeskOptions
from exporter.sources.helpdesk.tickets import PRIORITIES, Rating, Ticket
from exporter.sources.zendesk import fetch

NAME = "zendesk"
SOLVED_STATUSES = ("solved", "closed")  # a reopened ticket is open again: unsolved
# What Zendesk documents a ticket's status can be (deleted ones are dropped); any
# other is exported as "other" and logged once, so labels stay a small set.
STATUSES = frozenset({"new", "open", "pending", "hold", *SOLVED_STATUSES})


@dataclass(frozen=True)
class ZendeskConfig:
    base_url: str  # https://<subdomain>.zendesk.com, or base_url as given
    email: str  # the agent the API token belongs to
    api_token: Secret
    business_hours: bool = False  # the metric sets' business-hours times, not calendar
    poll_interval: float = 300.0
    limits: PollLimits = PollLimits(2_000, 7200.0)  # a first export of 500,000 tickets changed in 30 days, at 10 a minute
    export_rate_limit: float = 10.0  # export requests a minute (High Volume add-on: 30)
    rate_limit: float = 5.0  # requests a second, every endpoint
    timeout: float = 30.0


_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # one DNS label


def parse_config(section: Section) -> ZendeskConfig:
    subdomain, base_url = section.string("subdomain"), section.string("base_url")
    if (subdomain is None) == (base_url is None):
        raise section.error("subdomain", "give subdomain (example for example.zendesk.com) "
                            "or base_url, one of them")
    if subdomain is not None:
        subdomain = subdomain.strip().lower()
        if not _SUBDOMAIN.fullmatch(subdomain):
            raise section.error("subdomain", f"{_shown(section, 'subdomain', subdomain)} is not "
                                "a subdomain: give the first part of <subdomain>.zendesk.com")
        base_url = f"https://{subdomain}.zendesk.com"
    else:
        base_url = section.url("base_url")
    email = section.string("email", required=True).strip()
    if "@" not in email or any(c.isspace() for c in email):
        raise section.error("email", f"{_shown(section, 'email', email)} is not an email "
                            "address (the agent the API token belongs to)")
    return ZendeskConfig(
        base_url=base_url.rstrip("/"), email=email, api_token=section.secret("api_token"),
        business_hours=section.boolean("business_hours", ZendeskConfig.business_hours),
        export_rate_limit=section.number("export_rate_limit", ZendeskConfig.export_rate_limit,
                                         minimum=1),
        **section.common(ZendeskConfig),
    )


def _shown(section: Section, name: str, value: str) -> str:
    """A bad value for an error message, unless it came from the environment: a
    variable put in the wrong place may hold the API token."""
    if section.key(name) in section.from_env:
        return "the value from the environment"
    return repr(value)


def make_client(source_config: ZendeskConfig, **overrides: Any) -> HttpClient:
    # API token auth: HTTP Basic with "<email>/token" as the user name. The client
    # registers the header (and its base64 part) as secrets, so neither is ever logged.
    user = f"{source_config.email}/token:{source_config.api_token.reveal()}"
    header = "Basic " + base64.b64encode(user.encode()).decode()
    return http_client(NAME, source_config, headers={"Authorization": header}, **overrides)


@dataclass(frozen=True)
class _State:
    tickets: dict[str, Ticket] = field(default_factory=dict)  # id -> record
    cursor: str | None = None  # where the next export starts; None: the beginning


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
        # A burst of one: export requests spread evenly over the minute, so a long
        # first export never meets Zendesk's limit (and its minute-long Retry-After).
        self.export_limiter = export_limiter or RateLimiter(
            source_config.export_rate_limit / 60, burst=1)
        self._state = _State()

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        return export.samples(NAME, self.read(now), now, self.options)

    def read(self, now: int) -> HelpdeskData:
        """Bring the kept tickets up to date from the export, and read the ratings."""
        tickets = dict(self._state.tickets)
        cursor = self._read_tickets(tickets, self._state.cursor, now - export.LOOKBACK, now)
        ratings = self._ratings(now)
        # Solved tickets leave once they are older than every window.
        tickets = {key: t for key, t in tickets.items() if export.keep(t, now)}
        self._state = _State(tickets, cursor)  # kept only once the whole poll is good
        return HelpdeskData(list(tickets.values()), ratings)

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """Every support KPI but the backlog by status at each step (see backfill.py),
        from one read: the unsolved tickets, the export from the longest window before
        the first step, and the ratings since then; the last step has every KPI."""
        now, since = steps[-1], steps[0] - export.LOOKBACK
        tickets: dict[str, Ticket] = {}
        self._read_tickets(tickets, None, since, now, keep=False)
        data = HelpdeskData(list(tickets.values()), self._ratings(now, since))
        for at in steps[:-1]:
            yield at, export.samples_at(NAME, data, at, self.options)
        yield now, export.samples(NAME, data, now, self.options)

    def _read_tickets(self, tickets: dict[str, Ticket], cursor: str | None, start_time: int,
                      now: int, keep: bool = True) -> str | None:
        """Merge into `tickets` what the export has from `cursor`; without a cursor (a
        first read), the backlog and then the export from `start_time`. Returns the
        cursor to continue from."""
        if cursor is None:
            for raw in fetch.unsolved_tickets(self.client):
                self._merge(tickets, raw, {}, now, keep)
        for page in fetch.export_pages(self.client, cursor, self._pace_export,
                                       start_time=start_time):
            metric_sets = _by_ticket(page.metric_sets)
            for raw in page.tickets:
                self._merge(tickets, raw, metric_sets, now, keep)
            cursor = page.after_cursor or cursor
        return cursor

    def _pace_export(self) -> None:
        self.client.stats.add_rate_limit_wait(self.export_limiter.acquire())

    # -- records --------------------------------------------------------------

    def _merge(self, tickets: dict[str, Ticket], raw: Any, metric_sets: dict[str, dict],
               now: int, keep: bool = True) -> None:
        """Put one exported ticket in place of what was kept for it (or drop it: when
        deleted, or with `keep`, when no KPI of `now` needs it)."""
        if not isinstance(raw, dict) or raw.get("id") is None:
            raise UpstreamDataError("zendesk: a ticket in the export has no id")
        ticket_id = str(raw["id"])
        if raw.get("status") == "deleted":
            tickets.pop(ticket_id, None)
            return
        ticket = self._ticket(ticket_id, raw, metric_sets.get(ticket_id))
        if not keep or export.keep(ticket, now):
            tickets[ticket_id] = ticket
        else:
            tickets.pop(ticket_id, None)  # e.g. an old ticket solved long ago, touched now

    def _ticket(self, ticket_id: str, raw: dict, metrics: dict | None) -> Ticket:
        status = raw.get("status")
        if not isinstance(status, str) or not status:
            raise UpstreamDataError(f"zendesk: ticket {ticket_id} has status {status!r}")
        if status not in STATUSES:
            # Once, not once per value: an upstream inventing values must not flood the log.
            self.warn_once("status", "zendesk: tickets of status %r, which Zendesk does not "
                           "document, are counted as unsolved under \"other\" (so are any "
                           "other such statuses, without a word more)", status)
            status = OTHER
        created = fetch.seconds(raw.get("created_at"), f"the created_at of ticket {ticket_id}")
        if created is None:
            raise UpstreamDataError(f"zendesk: ticket {ticket_id} has no created_at")
        priority = raw.get("priority") or "normal"  # no priority set: counted as normal
        if priority not in PRIORITIES:
            self.warn_once(f"priority:{priority}", "zendesk: tickets of priority %r are "
                           "counted as normal", priority)
            priority = "normal"
        metrics = metrics or {}  # a ticket seconds old may have no metric set yet
        reply = _minutes(metrics, "reply_time_in_minutes", ticket_id)
        resolution = _minutes(metrics, "full_resolution_time_in_minutes", ticket_id)
        solved = None
        if status in SOLVED_STATUSES:
            solved = fetch.seconds(metrics.get("solved_at"), f"the solved_at of ticket {ticket_id}")
        # Zendesk keeps no first-reply timestamp: it is creation plus the calendar
        # reply time, whichever clock the durations are reported in.
        first_reply = None if reply["calendar"] is None else created + round(reply["calendar"] * 60)
        clock = "business" if self.config.business_hours else "calendar"
        return Ticket(
            id=ticket_id, status=status, priority=priority, created=created, solved=solved,
            first_reply=first_reply, first_reply_seconds=_seconds(reply[clock]),
            resolution_seconds=None if solved is None else _seconds(resolution[clock]))

    def _ratings(self, now: int, since: int | None = None) -> list[Rating]:
        ratings = []
        for raw in fetch.ratings_since(self.client, now - export.LOOKBACK if since is None
                                       else since):
            if not isinstance(raw, dict) or raw.get("id") is None:
                raise UpstreamDataError("zendesk: a satisfaction rating has no id")
            score = raw.get("score")
            if score not in ("good", "bad"):
                continue  # offered but not answered (score=received should leave these out)
            what = f"the time of satisfaction rating {raw['id']}"
            # updated_at: when the customer gave the score they hold now.
            given = fetch.seconds(raw.get("updated_at") or raw.get("created_at"), what)
            if given is None:
                raise UpstreamDataError(f"zendesk: satisfaction rating {raw['id']} has no time")
            ratings.append(Rating(str(raw["id"]), given, score == "good"))
        return ratings


def _by_ticket(metric_sets: list[Any]) -> dict[str, dict]:
    """A page's metric sets by ticket id."""
    return {str(m["ticket_id"]): m for m in metric_sets
            if isinstance(m, dict) and m.get("ticket_id") is not None}


def _minutes(metrics: dict, name: str, ticket_id: str) -> dict[str, float | None]:
    """A metric set's {calendar, business} minutes, each None until it happens."""
    value = metrics.get(name)
    if value is None:
        return {"calendar": None, "business": None}
    if not isinstance(value, dict):
        raise UpstreamDataError(f"zendesk: ticket {ticket_id} has {name} {value!r}")
    result = {}
    for clock in ("calendar", "business"):
        minutes = value.get(clock)
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(
                minutes, (int, float)) or not math.isfinite(minutes) or minutes < 0):
            raise UpstreamDataError(f"zendesk: ticket {ticket_id} has {clock} {name} "
                                    f"{minutes!r}")
        result[clock] = None if minutes is None else float(minutes)
    return result


def _seconds(minutes: float | None) -> float | None:
    return None if minutes is None else minutes * 60


def create(source_config: ZendeskConfig, config: Any) -> ZendeskSource:
    return ZendeskSource(source_config, export.helpdesk_options(config))


SOURCE_TYPE = Registration(parse_config, create)
