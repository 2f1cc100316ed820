"""The last 30 days of subscription and discount events, fetched incrementally.

The first poll lists every event Stripe still keeps (30 days); later polls ask
only for events created since the newest one already held (the same second
again, because more events may have landed in it, de-duplicated by id).
Events older than the retention are dropped, so memory stays bounded.
"""

from __future__ import annotations

from typing import Callable, Iterator

from exporter.sources.stripe.parse import MalformedObject

RETENTION = 30 * 86400
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


class EventLog:
    def __init__(self, retention: int = RETENTION):
        self.retention = retention
        self._events: list[dict] = []  # newest first, as Stripe lists them
        self._ids: set[str] = set()

    def refresh(self, list_all: ListAll, now: int) -> int:
        """Fetch what is new; returns how many events were added."""
        since = self._events[0]["created"] if self._events else now - self.retention
        params = [("types[]", kind) for kind in EVENT_TYPES]
        params.append(("created[gte]", str(since)))
        new = []
        for event in list_all("/v1/events", params):
            _check(event)
            if event["id"] not in self._ids:
                new.append(event)
                self._ids.add(event["id"])
        # Everything fetched is at least as new as what we hold: it goes in front.
        self._events[:0] = new
        self._prune(now)
        return len(new)

    def _prune(self, now: int) -> None:
        cutoff = now - self.retention
        while self._events and self._events[-1]["created"] < cutoff:
            self._ids.discard(self._events.pop()["id"])

    def events(self, prefix: str = "") -> list[dict]:
        """Held events of the types starting with `prefix`, newest first."""
        return [e for e in self._events if e["type"].startswith(prefix)]


def _check(event: dict) -> None:
    data = event.get("data") if isinstance(event, dict) else None
    if (not isinstance(data, dict) or not isinstance(data.get("object"), dict)
            or not isinstance(event.get("created"), int) or not isinstance(event.get("id"), str)
            or not isinstance(event.get("type"), str)):
        raise MalformedObject(f"event {event.get('id', '?') if isinstance(event, dict) else '?'}: "
                              "missing id, type, created or data.object")
