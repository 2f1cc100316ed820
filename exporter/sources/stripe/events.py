"""The last 30 days of subscription and discount events, fetched incrementally.

The first poll lists the events Stripe still keeps (30 days), newest first;
later polls ask only for events created since a little before the newest one
already held (events can become listable a moment after their `created`
time), and drop the ones they already have by id. A large account's month of
events is more pages than one poll should read (some 1.2 events per
subscription: 12,000 pages at a million), so the month's listing may stop
after some pages and go on from there at the next polls (read_back); until
it is done the log is not `complete`, and the past is not rebuilt from it. A
fetch that fails part-way adds nothing, so the next poll asks again. Events
older than the retention are dropped, so memory stays bounded; a malformed
event fails the poll.

A subscription event is kept as a row of a ChangeLog (changelog.py): its
subscription after and before it, parsed once, in the poll that listed it,
once that poll has today's prices, coupons and discounts (settle). Most events
are renewals whose subscription is today's, and their records are today's
records. An event that names a price, coupon or discount not known yet keeps
its slimmed JSON and is parsed again at the next poll.
"""

from __future__ import annotations

import logging
from typing import Callable, Container, Iterator, NamedTuple, TypeVar

from exporter.sources.stripe.changelog import ChangeLog, span
from exporter.sources.stripe.compact import Compactor
from exporter.sources.stripe.fetch import PAGE_SIZE
from exporter.sources.stripe.history import put_back
from exporter.sources.stripe.parse import MalformedObject, discounts_on
from exporter.sources.stripe.records import SubscriptionChange

log = logging.getLogger(__name__)

RETENTION = 30 * 86400
OVERLAP = 300  # seconds re-asked before the newest held event
# Every event type that changes a subscription's MRR, status or discounts.
EVENT_TYPES = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.discount.created",
    "customer.discount.updated",
    "customer.discount.deleted",
)

ListAll = Callable[[str, list[tuple[str, str]]], Iterator[dict]]
Parse = Callable[[dict], SubscriptionChange]  # history.settled, with what is known

def slim(event: dict, compactor: Compactor | None = None) -> dict:
    """The parts of an event that rebuilding the past reads (see compact.py): the
    legacy `plan` on every item, payment settings and the like are dropped, so a
    month of events takes a fraction of the memory. `previous_attributes` that put
    back nothing the KPIs read (a renewal's new period) are left empty: its
    subscription before and after is then one record (history.settled)."""
    compactor = compactor or Compactor()
    data = event["data"]
    if event["type"].startswith("customer.subscription."):
        data = {key: compactor.subscription(value) for key, value in data.items()
                if key in ("object", "previous_attributes") and isinstance(value, dict)}
        if data.get("previous_attributes") and "object" in data and put_back(
                data["object"], data["previous_attributes"]) == data["object"]:
            data["previous_attributes"] = {}
    elif event["type"].startswith("customer.discount."):
        data = {key: compactor.discount(value) for key, value in data.items()
                if key in ("object", "previous_attributes") and isinstance(value, dict)}
    return {"id": event["id"], "type": event["type"], "created": event["created"], "data": data}


class EventLog:
    def __init__(self, retention: int = RETENTION):
        self.retention = retention
        # Newest first, as Stripe lists them: subscription events parsed once
        # (settle), and discount events as slimmed.
        self._changes = ChangeLog()
        self._discount_events: list[dict] = []
        self._compactor = Compactor()  # one copy of each price and coupon across the events
        self._listed = False  # whether the retention's listing was ever started
        self._backlog: _Cursor | None = None  # where it goes on, while it is not done

    @property
    def complete(self) -> bool:
        """Whether every event of the retention is held, so the past may be rebuilt."""
        return self._listed and self._backlog is None

    def refresh(self, list_all: ListAll, now: int, *, relist: bool = False,
                parse: Parse | None = None, named_since: int | None = None,
                seen: frozenset[str] = frozenset(), max_pages: int | None = None) -> set[str]:
        """Fetch what is new; returns the subscriptions the added events name (only
        those created since `named_since`, if given, and not `seen`). Call settle
        before reading the changes.

        `relist`: list the whole retention again and replace what is held (to
        parse every event afresh); only events not held before count as added.
        `parse`: parse each subscription event as it comes (a month of events
        held as JSON until settle would be most of a first poll's memory).
        `max_pages`: when the retention is listed (the first time, or `relist`),
        stop after this many pages, but not before what is new: the events
        since `named_since`, or a relist's since the newest held before (less
        the overlap); read_back lists the rest."""
        newest = self._newest()
        whole = relist or newest is None
        since = now - self.retention if whole else newest - OVERLAP
        if not whole and self._backlog is not None:
            # only what is newer than the listing's cursor: read_back lists the rest
            since = max(since, self._backlog.created + 1)
        # The only held events this listing can list again (all of them on a relist,
        # where none is skipped but only those not held before count as new).
        held = self._ids_since(since)
        read = _Read(self._compactor, parse, set() if relist else held)
        new_since = named_since if named_since is not None or newest is None else newest - OVERLAP
        stopped = read.listing(_list_events(list_all, since), max_pages if whole else None,
                               new_since)
        named = {subscription for event_id, created, subscription in read.named
                 if event_id not in held and event_id not in seen
                 and (named_since is None or created >= named_since)}
        if relist:
            self._changes, self._discount_events = ChangeLog(), []
        if whole:
            self._listed, self._backlog = True, _Cursor.at(since, stopped)
        self._merge(read, now)
        self._log_progress()
        return named

    def read_back(self, list_all: ListAll, now: int, max_pages: int | None,
                  parse: Parse | None = None) -> int:
        """Go on with the retention's listing where it stopped (refresh's
        `max_pages`), at most `max_pages` pages (None: to the end); returns the
        pages read. Every event it adds is older than the ones held, so none of
        them names a change since the subscriptions were read."""
        if self._backlog is None or max_pages == 0:
            return 0
        since = max(self._backlog.since, now - self.retention)  # no older than is kept
        # Older than the cursor: held only if created in its second (listed before it).
        read = _Read(self._compactor, parse, self._ids_until(self._backlog.created), names=False)
        stopped = read.listing(_list_events(list_all, since, self._backlog.after), max_pages, None)
        self._backlog = _Cursor.at(since, stopped)
        self._merge(read, now)
        self._log_progress()
        return -(-read.count // PAGE_SIZE)

    @staticmethod
    def ids_since(list_all: ListAll, since: int) -> frozenset[str]:
        """The ids of the events created since `since`, held or not."""
        return frozenset(event["id"] for event in _list_events(list_all, since)
                         if isinstance(event, dict) and isinstance(event.get("id"), str))

    def settle(self, parse: Parse) -> None:
        """Parse the subscription events not parsed for good yet (history.settled)."""
        self._changes.settle(parse)

    def _merge(self, read: "_Read", now: int) -> None:
        # What was fetched is newer (or, read back, older) than what we hold, but
        # for the overlap: merge by time.
        self._changes.merge(read.changes)
        self._discount_events = merged(read.discount_events, self._discount_events,
                                       lambda e: e["created"])
        self._prune(now)

    def _log_progress(self) -> None:
        if self._backlog is not None:
            log.info("stripe: the month of events: %d listed, more at the next poll",
                     len(self._changes) + len(self._discount_events))

    def _newest(self) -> int | None:
        """When the newest held event was created."""
        times = []
        if self._changes:
            times.append(self._changes.created[0])
        if self._discount_events:
            times.append(self._discount_events[0]["created"])
        return max(times, default=None)

    def _prune(self, now: int) -> None:
        cutoff = now - self.retention
        self._changes.prune(cutoff)
        while self._discount_events and self._discount_events[-1]["created"] < cutoff:
            self._discount_events.pop()

    def _ids_since(self, since: int) -> set[str]:
        """The ids of the held events created at `since` or later. No set of every
        id is kept (a month of them is some 4 MiB of set at 100,000 subscriptions):
        a listing can only meet again the held events of the time it spans."""
        ids = set()
        for row, created in enumerate(self._changes.created):  # newest first
            if created < since:
                break
            ids.add(self._changes.id[row])
        for event in self._discount_events:
            if event["created"] < since:
                break
            ids.add(event["id"])
        return ids

    def _ids_until(self, until: int) -> set[str]:
        """The ids of the held events created at `until` or earlier."""
        ids = set()
        for row in reversed(range(len(self._changes))):  # oldest first
            if self._changes.created[row] > until:
                break
            ids.add(self._changes.id[row])
        for event in reversed(self._discount_events):
            if event["created"] > until:
                break
            ids.add(event["id"])
        return ids

    def changes(self) -> ChangeLog:
        """The held subscription events, settled, newest first."""
        return self._changes

    def discount_events(self) -> list[dict]:
        """The held `customer.discount.*` events (slimmed), newest first."""
        return self._discount_events

    def pending_discount_ids(self) -> set[str]:
        """Every discount id the events not settled for good name (in objects and
        previous_attributes), and the discount events' own."""
        return referenced_discounts([event for event in self._changes.pending
                                     if event is not None] + self._discount_events)


class _Cursor(NamedTuple):
    """Where a listing of the retention that stopped early goes on."""

    since: int  # its created[gte]
    after: str  # the last event it listed
    created: int  # when that was created: every newer event was listed

    @staticmethod
    def at(since: int, stopped: dict | None) -> "_Cursor | None":
        return None if stopped is None else _Cursor(since, stopped["id"], stopped["created"])


class _Read:
    """What one listing of events adds to a log; nothing is added before it ends."""

    def __init__(self, compactor: Compactor, parse: Parse | None, held: Container[str],
                 names: bool = True):
        self._compactor, self._parse, self._held, self._names = compactor, parse, held, names
        self.changes = ChangeLog()
        self.discount_events: list[dict] = []
        self.ids: set[str] = set()
        self.named: list[tuple[str, int, str]] = []  # (event, created, subscription it names)
        self.count = 0  # events listed, held ones included

    def listing(self, events: Iterator[dict], max_pages: int | None,
                new_since: int | None) -> dict | None:
        """Read events (newest first) until they end, or until `max_pages` pages
        (at least one) are read and the events are older than `new_since`;
        returns the last event read when it stopped before the end, else None.
        An error here leaves the log as it was."""
        for event in events:
            if not well_formed(event):
                # Skipping it would rebuild the past without it: numbers wrong but served.
                name = event.get("id") if isinstance(event, dict) else None
                raise MalformedObject(f"stripe: event {name!r} has no id, type, created time "
                                      "or data.object with an id")
            self.count += 1
            self._add(event)
            if (max_pages is not None and self.count >= max_pages * PAGE_SIZE
                    and self.count % PAGE_SIZE == 0  # the end of a page: none of it is lost
                    and (new_since is None or event["created"] < new_since)):
                return event
        return None

    def _add(self, event: dict) -> None:
        if event["id"] in self.ids or event["id"] in self._held:
            return
        slimmed = slim(event, self._compactor)
        self.ids.add(event["id"])
        if self._names:  # what the events name, for the caller to pick from (as listed:
            # a slimmed discount keeps no `subscription`)
            self.named += [(event["id"], event["created"], subscription)
                           for subscription in _named_subscription(event)]
        if event["type"].startswith("customer.subscription."):
            self.changes.append(self._parse(slimmed) if self._parse else SubscriptionChange(
                event["id"], event["type"], event["created"],
                event["data"]["object"]["id"], pending=slimmed))
        else:
            self.discount_events.append(slimmed)


T = TypeVar("T")


def merged(new: list[T], held: list[T], created: Callable[[T], int]) -> list[T]:
    """sorted(new + held, key=created, reverse=True), for `held` newest first.

    Only the held events within `new`'s span of time are sorted with it: the
    rest keep their place, as a stable sort would keep them. Sorting a month
    of them at every refresh held the interpreter lock some 30 ms at 300,000
    subscriptions (a scrape waits it out), and computed a million keys."""
    if not new:
        return list(held)  # a new list, as sorted() gives: one handed out stays as it was
    start, stop = span(held, created, [created(item) for item in new])
    result = held.copy()  # one copy and a slice put in place: no concatenating a million
    result[start:stop] = sorted(new + held[start:stop], key=created, reverse=True)
    return result


def _list_events(list_all: ListAll, since: int, after: str | None = None) -> Iterator[dict]:
    params = [("types[]", kind) for kind in EVENT_TYPES]
    cursor = [] if after is None else [("starting_after", after)]
    return list_all("/v1/events", [*params, ("created[gte]", str(since)), *cursor])


def _named_subscription(event: dict) -> set[str]:
    """The subscription an event says changed, if it names one."""
    obj = event["data"]["object"]
    if event["type"].startswith("customer.subscription."):
        return {obj["id"]}
    if event["type"].startswith("customer.discount.") and isinstance(obj.get("subscription"), str):
        return {obj["subscription"]}
    return set()


def well_formed(event: object) -> bool:
    """Whether an event has what every reader of events relies on: id, type, created
    time, and data.object with an id."""
    if not isinstance(event, dict):
        return False
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return (isinstance(obj, dict) and isinstance(obj.get("id"), str)
            and isinstance(event.get("created"), int) and isinstance(event.get("id"), str)
            and isinstance(event.get("type"), str))


def discount_ids(obj: dict) -> set[str]:
    """Ids of the discounts a subscription (or its previous_attributes) names."""
    return {d if isinstance(d, str) else d.get("id") for d in discounts_on(obj)}


def referenced_discounts(events: list[dict]) -> set[str]:
    """Every discount id the held events name, in objects and previous_attributes."""
    ids: set[str] = set()
    for event in events:
        obj = event["data"]["object"]
        if event["type"].startswith("customer.discount."):
            ids.add(obj["id"])
        else:
            ids |= discount_ids(obj) | discount_ids(event["data"].get("previous_attributes") or {})
    return ids
