"""Charges, refunds and disputes of a trailing window, kept between polls.

The first poll lists the whole window. A later one lists only what was created
since the previous listing (less an overlap: Stripe's lists can show an object
a moment after its `created` time), and asks again the held objects that
changed since: the ones the change events name (ChangeFeed: a pending refund
that succeeded or failed, a dispute answered or closed, a pending charge
settled), one listing of events a poll for all three windows. Until the events
can tell (the first poll, or after a gap longer than the 30 days Stripe keeps
them), every held object that can still change (a pending charge or refund, an
open dispute) is asked again instead. Either way each is asked by id when they
are fewer than the pages a listing from the oldest of them would take (a few
refunds pending for weeks would otherwise re-list weeks of refunds), else by
that listing. Everything created from where a listing starts is replaced by
what it lists, so the result is what listing the whole window would give:
objects are only ever created in the present, one changes only with an event
(or, before the events can tell, only while it is unsettled), and none is
ever deleted.
"""

from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

from exporter.http import HttpClient, UpstreamError
from exporter.sources.stripe.events import RETENTION, well_formed
from exporter.sources.stripe.fetch import PAGE_SIZE, list_all
from exporter.sources.stripe.parse import MalformedObject

OVERLAP = 300  # seconds re-listed before the previous listing
# The events Stripe sends when a charge, refund or dispute changes after it was
# created (the windows list what is created). charge.succeeded and .failed also
# come for new charges; they name objects a listing reads anyway.
CHANGE_EVENT_TYPES = (
    "charge.succeeded", "charge.failed",
    "refund.updated", "refund.failed", "charge.refund.updated",
    "charge.dispute.updated", "charge.dispute.closed",
    "charge.dispute.funds_withdrawn", "charge.dispute.funds_reinstated",
)


class Record(Protocol):
    id: str
    status: str
    created: int


R = TypeVar("R", bound=Record)


class ChangeFeed:
    """Which charges, refunds and disputes changed, from the events since the last poll."""

    def __init__(self) -> None:
        self._listed_at: int | None = None

    def changed(self, client: HttpClient, now: int) -> set[str] | None:
        """The ids of the objects the change events since the previous call (less the
        overlap) name, or None when the events cannot tell: at the first call (nothing
        was held before it), or after more than Stripe keeps them. An error here
        leaves the next call to list from the same place."""
        if self._listed_at is None or self._listed_at - OVERLAP < now - RETENTION:
            self._listed_at = now
            return None
        named = set()
        for event in list_all(client, "/v1/events", [
                ("created[gte]", str(self._listed_at - OVERLAP)),
                *(("types[]", kind) for kind in CHANGE_EVENT_TYPES)]):
            if not well_formed(event):
                raise MalformedObject(f"stripe: event {event.get('id')!r} has no id, type, "
                                      "created time or data.object with an id")
            named.add(event["data"]["object"]["id"])
        self._listed_at = now
        return named


class TrailingWindow(Generic[R]):
    def __init__(self, fetch: Callable[[HttpClient, int], list[R]],
                 settled: Callable[[R], bool],
                 fetch_one: Callable[[HttpClient, str], R] | None = None):
        self._fetch = fetch  # (client, created since) -> records
        self._fetch_one = fetch_one  # (client, id) -> the record
        self._settled = settled
        self._held: list[R] = []
        self._listed_at: int | None = None
        # What ChangeFeed said at each poll since the last listing (None: it could not tell).
        self._notes: list[set[str] | None] = []

    def note_changes(self, changed: set[str] | None) -> None:
        """The objects the change events name (ChangeFeed.changed), for the next update:
        it asks again only those of them it holds, unless a note since the last
        listing was None (or there is none), when it asks every unsettled one."""
        self._notes.append(changed)

    def update(self, client: HttpClient, since: int, now: int) -> list[R]:
        """The objects created since `since`, up to date as of `now`."""
        start, reread = since, {}
        if self._listed_at is not None:
            start = max(since, self._listed_at - OVERLAP)
            changed = self._changed()
            stale = [r for r in self._held if since <= r.created < start and (
                r.id in changed if changed is not None else not self._settled(r))]
            if stale:
                oldest = min(r.created for r in stale)
                relisted = sum(1 for r in self._held if r.created >= oldest)
                reread = self._reread(client, stale, -(-relisted // PAGE_SIZE))
                if reread is None:
                    start, reread = oldest, {}
        fetched = self._fetch(client, start)  # an error here keeps what was held
        kept = [reread.get(r.id, r) for r in self._held if since <= r.created < start]
        self._held = kept + fetched
        self._listed_at, self._notes = now, []
        return list(self._held)

    def _changed(self) -> set[str] | None:
        """Every object named since the last listing, or None if that is not known."""
        if not self._notes or None in self._notes:
            return None
        return set().union(*self._notes)

    def _reread(self, client: HttpClient, stale: list[R], pages: int) -> dict[str, R] | None:
        """The objects asked again by id, or None to list from the oldest: when that
        is as cheap (the listing from the previous one costs a page either way) or
        Stripe no longer has one."""
        if self._fetch_one is None or len(stale) + 1 >= pages:
            return None
        try:
            return {r.id: self._fetch_one(client, r.id) for r in stale}
        except UpstreamError as exc:
            if exc.status != 404:
                raise
            return None

    def forget(self) -> None:
        """List the whole window next time."""
        self._held, self._listed_at, self._notes = [], None, []
