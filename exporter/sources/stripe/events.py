"""The last 30 days of subscription and discount events, fetched incrementally.

The first poll lists every event Stripe still keeps (30 days); later polls ask
only for events created since a little before the newest one already held
(events can become listable a moment after their `created` time), and drop the
ones they already have by id. A fetch that fails part-way adds nothing, so the
next poll asks again. Events older than the retention are dropped, so memory
stays bounded; a malformed event is skipped and logged, not fatal.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from exporter.sources.stripe.compact import Compactor
from exporter.sources.stripe.history import put_back
from exporter.sources.stripe.parse import MalformedObject, discounts_on

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

def slim(event: dict, compactor: Compactor | None = None) -> dict:
    """The parts of an event that rebuilding the past reads (see compact.py): the
    legacy `plan` on every item, payment settings and the like are dropped, so a
    month of events takes a fraction of the memory. A subscription's object is
    shared with its other copies where equal (Compactor.shared), and
    `previous_attributes` that put back nothing the KPIs read (a renewal's new
    period) are left empty, so such an event holds little of its own."""
    compactor = compactor or Compactor()
    data = event["data"]
    if event["type"].startswith("customer.subscription."):
        data = {key: compactor.subscription(value) for key, value in data.items()
                if key in ("object", "previous_attributes") and isinstance(value, dict)}
        if "object" in data:
            data["object"] = compactor.shared(data["object"])
            if data.get("previous_attributes") and put_back(
                    data["object"], data["previous_attributes"]) == data["object"]:
                data["previous_attributes"] = {}
    elif event["type"].startswith("customer.discount."):
        data = {key: compactor.discount(value) for key, value in data.items()
                if key in ("object", "previous_attributes") and isinstance(value, dict)}
    return {"id": event["id"], "type": event["type"], "created": event["created"], "data": data}


class EventLog:
    def __init__(self, retention: int = RETENTION, compactor: Compactor | None = None):
        self.retention = retention
        self._events: list[dict] = []  # newest first, as Stripe lists them
        self._ids: set[str] = set()
        # One copy of each price and coupon across the events, and of each unchanged
        # subscription (shared with the held listing when the source passes its own).
        self._compactor = compactor or Compactor()

    def refresh(self, list_all: ListAll, now: int) -> list[dict]:
        """Fetch what is new; returns the events added (slimmed), oldest first."""
        since = self._events[0]["created"] - OVERLAP if self._events else now - self.retention
        params = [("types[]", kind) for kind in EVENT_TYPES]
        params.append(("created[gte]", str(since)))
        new, ids = [], set()
        for event in list_all("/v1/events", params):  # an error here leaves the log as it was
            if not _well_formed(event):
                # Skipping it would rebuild the past without it: numbers wrong but served.
                name = event.get("id") if isinstance(event, dict) else None
                raise MalformedObject(f"stripe: event {name!r} has no id, type, created time "
                                      "or data.object with an id")
            if event["id"] not in self._ids and event["id"] not in ids:
                new.append(slim(event, self._compactor))
                ids.add(event["id"])
        # What was fetched is newer than what we hold, but for the overlap: merge by time.
        self._events = sorted(new + self._events, key=lambda e: e["created"], reverse=True)
        self._ids |= ids
        self._prune(now)
        return sorted(new, key=lambda e: e["created"])

    def _prune(self, now: int) -> None:
        cutoff = now - self.retention
        while self._events and self._events[-1]["created"] < cutoff:
            self._ids.discard(self._events.pop()["id"])

    def events(self, prefix: str = "") -> list[dict]:
        """Held events of the types starting with `prefix`, newest first."""
        return [e for e in self._events if e["type"].startswith(prefix)]


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
