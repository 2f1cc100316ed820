"""The last 30 days of subscription and discount events, fetched incrementally.

The first poll lists every event Stripe still keeps (30 days); later polls ask
only for events created since a little before the newest one already held
(events can become listable a moment after their `created` time), and drop the
ones they already have by id. A fetch that fails part-way adds nothing, so the
next poll asks again. Events older than the retention are dropped, so memory
stays bounded; a malformed event fails the poll.

A subscription event is kept as a SubscriptionChange: its subscription after
and before it, parsed once, in the poll that listed it, once that poll has
today's prices, coupons and discounts (settle). Most events are renewals whose
subscription is today's, and their records are today's records. An event that
names a price, coupon or discount not known yet keeps its slimmed JSON and is
parsed again at the next poll.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from exporter.sources.stripe.compact import Compactor
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
        self._changes: list[SubscriptionChange] = []
        self._discount_events: list[dict] = []
        self._ids: set[str] = set()
        self._compactor = Compactor()  # one copy of each price and coupon across the events

    def refresh(self, list_all: ListAll, now: int, *, relist: bool = False,
                parse: Parse | None = None, named_since: int | None = None,
                seen: frozenset[str] = frozenset()) -> set[str]:
        """Fetch what is new; returns the subscriptions the added events name (only
        those created since `named_since`, if given, and not `seen`). Call settle
        before reading the changes.

        `relist`: list the whole retention again and replace what is held (to
        parse every event afresh); only events not held before count as added.
        `parse`: parse each subscription event as it comes (a month of events
        held as JSON until settle would be most of a first poll's memory)."""
        newest = self._newest()
        since = now - self.retention if relist or newest is None else newest - OVERLAP
        changes, discount_events, ids, named = [], [], set(), set()
        for event in _list_events(list_all, since):  # an error here leaves the log as it was
            if not _well_formed(event):
                # Skipping it would rebuild the past without it: numbers wrong but served.
                name = event.get("id") if isinstance(event, dict) else None
                raise MalformedObject(f"stripe: event {name!r} has no id, type, created time "
                                      "or data.object with an id")
            if event["id"] in ids or (event["id"] in self._ids and not relist):
                continue
            slimmed = slim(event, self._compactor)
            ids.add(event["id"])
            if event["id"] not in self._ids and event["id"] not in seen and (
                    named_since is None or event["created"] >= named_since):
                named |= _named_subscription(slimmed)
            if event["type"].startswith("customer.subscription."):
                changes.append(parse(slimmed) if parse else SubscriptionChange(
                    event["id"], event["type"], event["created"],
                    event["data"]["object"]["id"], pending=slimmed))
            else:
                discount_events.append(slimmed)
        if relist:
            self._changes, self._discount_events, self._ids = [], [], set()
        # What was fetched is newer than what we hold, but for the overlap: merge by time.
        self._changes = sorted(changes + self._changes, key=lambda c: c.created, reverse=True)
        self._discount_events = sorted(discount_events + self._discount_events,
                                       key=lambda e: e["created"], reverse=True)
        self._ids |= ids
        self._prune(now)
        return named

    @staticmethod
    def ids_since(list_all: ListAll, since: int) -> frozenset[str]:
        """The ids of the events created since `since`, held or not."""
        return frozenset(event["id"] for event in _list_events(list_all, since)
                         if isinstance(event, dict) and isinstance(event.get("id"), str))

    def settle(self, parse: Parse) -> None:
        """Parse the subscription events not parsed for good yet (history.settled)."""
        self._changes = [parse(change.pending) if change.pending is not None else change
                         for change in self._changes]

    def _newest(self) -> int | None:
        """When the newest held event was created."""
        times = []
        if self._changes:
            times.append(self._changes[0].created)
        if self._discount_events:
            times.append(self._discount_events[0]["created"])
        return max(times, default=None)

    def _prune(self, now: int) -> None:
        cutoff = now - self.retention
        while self._changes and self._changes[-1].created < cutoff:
            self._ids.discard(self._changes.pop().id)
        while self._discount_events and self._discount_events[-1]["created"] < cutoff:
            self._ids.discard(self._discount_events.pop()["id"])


    def changes(self) -> list[SubscriptionChange]:
        """The held subscription events, settled, newest first."""
        return self._changes

    def discount_events(self) -> list[dict]:
        """The held `customer.discount.*` events (slimmed), newest first."""
        return self._discount_events

    def pending_discount_ids(self) -> set[str]:
        """Every discount id the events not settled for good name (in objects and
        previous_attributes), and the discount events' own."""
        return referenced_discounts([change.pending for change in self._changes
                                     if change.pending is not None] + self._discount_events)


def _list_events(list_all: ListAll, since: int) -> Iterator[dict]:
    params = [("types[]", kind) for kind in EVENT_TYPES]
    return list_all("/v1/events", [*params, ("created[gte]", str(since))])


def _named_subscription(event: dict) -> set[str]:
    """The subscription an event says changed, if it names one."""
    obj = event["data"]["object"]
    if event["type"].startswith("customer.subscription."):
        return {obj["id"]}
    if event["type"].startswith("customer.discount.") and isinstance(obj.get("subscription"), str):
        return {obj["subscription"]}
    return set()


def _well_formed(event: object) -> bool:
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
