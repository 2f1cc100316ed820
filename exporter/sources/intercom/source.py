"""The Intercom source: its config, the conversations it keeps between polls,
and the records it hands to the shared support math (a conversation is a ticket).

The first poll (and one every `full_sync_interval`) searches every
conversation that is not closed or was updated in the last 30 days; later
polls search only those updated since the previous poll (overlapping it by
5 minutes) and merge them in by id. Searches never return a deleted
conversation, so the periodic full read is what drops them. A poll that fails
part-way changes nothing.

Mapping: `state` is the status (open, snoozed, closed); Intercom's one
priority flag maps `priority` to high and `not_priority` to normal (the SLA
targets of those priorities apply); a closed conversation was solved at
`statistics.last_close_at`; the first reply is `statistics.first_admin_reply_at`,
its time `time_to_admin_reply`, the resolution time `time_to_last_close`
(Intercom leaves out time outside office hours when the workspace has them).
`conversation_rating` (1-5; 4 and 5 are satisfied) is a rating given at its
`updated_at`. We assume rating a conversation updates it (the full read
catches any that did not).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from exporter.config import PollLimits, Section
from exporter.http import HttpClient
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, http_client, Registration, Sample, UpstreamDataError
from exporter.sources.helpdesk import export
from exporter.sources.helpdesk.export import HelpdeskData, HelpdeskOptions
from exporter.sources.helpdesk.tickets import Rating, Ticket, satisfied_by_score
from exporter.sources.intercom import fetch

NAME = "intercom"
API_VERSION = "2.16"
REGIONS = {"us": "https://api.intercom.io", "eu": "https://api.eu.intercom.io",
           "au": "https://api.au.intercom.io"}
OVERLAP = 300  # seconds: a conversation seen twice is merged by id
PRIORITIES = {"priority": "high", "not_priority": "normal"}


@dataclass(frozen=True)
class IntercomConfig:
    access_token: Secret
    base_url: str = REGIONS["us"]
    poll_interval: float = 300.0
    limits: PollLimits = PollLimits(10_000, 3600.0)  # a full search of a million conversations
    full_sync_interval: float = 86400.0
    # Requests a second: Intercom allows ~1,000 a minute per app (in 10-second
    # windows); 5 a second leaves room for the workspace's other integrations.
    rate_limit: float = 5.0
    timeout: float = 30.0


def parse_config(section: Section) -> IntercomConfig:
    region = section.string("region", "us").strip().lower()
    if region not in REGIONS:
        raise section.error("region", f"{region!r} is not one of {', '.join(REGIONS)}")
    return IntercomConfig(
        access_token=section.secret("access_token"),
        base_url=section.url("base_url", REGIONS[region]),
        full_sync_interval=section.duration("full_sync_interval",
                                               IntercomConfig.full_sync_interval),
        **section.common(IntercomConfig),
    )


def make_client(source_config: IntercomConfig, **overrides: Any) -> HttpClient:
    return http_client(NAME, source_config, headers={
        "Authorization": f"Bearer {source_config.access_token.reveal()}",
        "Intercom-Version": API_VERSION, "Accept": "application/json"}, **overrides)


@dataclass
class _State:
    conversations: dict[str, dict] = field(default_factory=dict)  # id -> conversation
    synced: int | None = None  # when the last poll started
    full_at: int | None = None  # when the last full read started


class IntercomSource(HttpSource):
    name = NAME

    def __init__(self, source_config: IntercomConfig, options: HelpdeskOptions = HelpdeskOptions(),
                 *, clock: Callable[[], float] = time.time, client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.options = options
        self.clock = clock
        self.client = client or make_client(source_config)
        self._state = _State()

    def poll(self) -> list[Sample]:
        now = int(self.clock())
        return export.samples(NAME, self.read(now), now, self.options)

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """Every support KPI but the backlog by status at each step (see backfill.py),
        from one search: the conversations open, or changed since the longest window
        before the first step; the last step is what a poll computes."""
        now, since = steps[-1], steps[0] - export.LOOKBACK
        tickets, ratings = [], []
        for conversation_id, conversation in self._search(
                fetch.open_or_updated_since(since)).items():
            tickets.append(_ticket(conversation_id, conversation))
            rating = _rating(conversation_id, conversation)
            if rating is not None and rating.created > since:
                ratings.append(rating)
        data = HelpdeskData(tickets, ratings)
        for at in steps[:-1]:
            yield at, export.samples_at(NAME, data, at, self.options)
        yield now, export.samples(NAME, data, now, self.options)

    def read(self, now: int) -> HelpdeskData:
        state = self._state
        if state.full_at is None or now - state.full_at >= self.config.full_sync_interval:
            query, conversations, full_at = \
                fetch.open_or_updated_since(now - export.LOOKBACK), {}, now
        else:
            query, conversations, full_at = \
                fetch.updated_since((state.synced or now) - OVERLAP), dict(state.conversations), \
                state.full_at
        conversations.update(self._search(query))
        tickets, ratings, kept = [], [], {}
        for conversation_id, conversation in conversations.items():
            ticket = _ticket(conversation_id, conversation)
            rating = _rating(conversation_id, conversation)
            rated = rating is not None and rating.created > now - export.LOOKBACK
            # A rating given in the lookback counts, even on a conversation solved before it.
            if export.keep(ticket, now) or rated:
                kept[conversation_id] = conversation
                tickets.append(ticket)
                if rated:
                    ratings.append(rating)
        self._state = _State(kept, synced=now, full_at=full_at)  # only once all is good
        return HelpdeskData(tickets, ratings)

    def _search(self, query: dict) -> dict[str, dict]:
        """{id: conversation} of a search, each checked to have an id."""
        found = {}
        for conversation in fetch.search(self.client, query):
            if not isinstance(conversation, dict) or conversation.get("id") is None:
                raise UpstreamDataError("intercom: a conversation in the search has no id")
            found[str(conversation["id"])] = conversation
        return found


def _time(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise UpstreamDataError(f"intercom: {what} is {value!r}, not a Unix time")
    return int(value)


def _ticket(conversation_id: str, conversation: dict) -> Ticket:
    state = conversation.get("state")
    if state not in ("open", "snoozed", "closed"):
        raise UpstreamDataError(f"intercom: conversation {conversation_id} has state {state!r}")
    created = _time(conversation.get("created_at"), f"the created_at of conversation "
                    f"{conversation_id}")
    if created is None:
        raise UpstreamDataError(f"intercom: conversation {conversation_id} has no created_at")
    stats = conversation.get("statistics") or {}
    if not isinstance(stats, dict):
        raise UpstreamDataError(f"intercom: conversation {conversation_id} has statistics "
                                f"{stats!r}")

    def stat(name: str) -> int | None:
        return _time(stats.get(name), f"statistics.{name} of conversation {conversation_id}")

    solved = stat("last_close_at") if state == "closed" else None
    if state == "closed" and solved is None:  # else it would sit in the backlog for ever
        raise UpstreamDataError(f"intercom: conversation {conversation_id} is closed but has "
                                "no statistics.last_close_at")
    priority = conversation.get("priority")
    if priority is not None and priority not in PRIORITIES:
        raise UpstreamDataError(f"intercom: conversation {conversation_id} has priority "
                                f"{priority!r}")
    return Ticket(id=conversation_id, status=state,
                  priority=PRIORITIES.get(priority, "normal"),
                  created=created, solved=solved, first_reply=stat("first_admin_reply_at"),
                  first_reply_seconds=stat("time_to_admin_reply"),
                  resolution_seconds=None if solved is None else stat("time_to_last_close"))


def _rating(conversation_id: str, conversation: dict) -> Rating | None:
    rating = conversation.get("conversation_rating")
    if not isinstance(rating, dict) or rating.get("rating") is None:
        return None
    score = rating["rating"]
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise UpstreamDataError(f"intercom: conversation {conversation_id} has rating "
                                f"{score!r}, not 1 to 5")
    given = _time(rating.get("updated_at") or rating.get("created_at"),
                  f"the rating time of conversation {conversation_id}")
    if given is None:
        raise UpstreamDataError(f"intercom: the rating of conversation {conversation_id} "
                                "has no time")
    return Rating(conversation_id, given, satisfied_by_score(score))


def create(source_config: IntercomConfig, config: Any) -> IntercomSource:
    return IntercomSource(source_config, export.helpdesk_options(config))


SOURCE_TYPE = Registration(parse_config, create)
