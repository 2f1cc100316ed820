"""Charges, refunds and disputes of a trailing window, kept between polls.

The first poll lists the whole window. A later one lists only what was created
since the previous listing (less an overlap: Stripe's lists can show an object
a moment after its `created` time). The held objects that can still change (a
pending charge or refund, an open dispute) are asked again too: each by id
when they are fewer than the pages a listing from the oldest of them would
take (a few refunds pending for weeks would otherwise re-list weeks of
refunds at every poll), else by that listing. Everything created from where a
listing starts is replaced by what it lists, so the result is what listing
the whole window would give: objects are only ever created in the present, a
settled one does not change, and none is ever deleted.
"""

from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

from exporter.http import HttpClient, UpstreamError
from exporter.sources.stripe.fetch import PAGE_SIZE

OVERLAP = 300  # seconds re-listed before the previous listing


class Record(Protocol):
    id: str
    status: str
    created: int


R = TypeVar("R", bound=Record)


class TrailingWindow(Generic[R]):
    def __init__(self, fetch: Callable[[HttpClient, int], list[R]],
                 settled: Callable[[R], bool],
                 fetch_one: Callable[[HttpClient, str], R] | None = None):
        self._fetch = fetch  # (client, created since) -> records
        self._fetch_one = fetch_one  # (client, id) -> the record
        self._settled = settled
        self._held: list[R] = []
        self._listed_at: int | None = None

    def update(self, client: HttpClient, since: int, now: int) -> list[R]:
        """The objects created since `since`, up to date as of `now`."""
        start, reread = since, {}
        if self._listed_at is not None:
            start = max(since, self._listed_at - OVERLAP)
            unsettled = [r for r in self._held
                         if not self._settled(r) and since <= r.created < start]
            if unsettled:
                oldest = min(r.created for r in unsettled)
                relisted = sum(1 for r in self._held if r.created >= oldest)
                reread = self._reread(client, unsettled, -(-relisted // PAGE_SIZE))
                if reread is None:
                    start, reread = oldest, {}
        fetched = self._fetch(client, start)  # an error here keeps what was held
        kept = [reread.get(r.id, r) for r in self._held if since <= r.created < start]
        self._held = kept + fetched
        self._listed_at = now
        return list(self._held)

    def _reread(self, client: HttpClient, unsettled: list[R], pages: int) -> dict[str, R] | None:
        """The unsettled objects asked again by id, or None to list from the oldest:
        when that is as cheap (the listing from the previous one costs a page
        either way) or Stripe no longer has one."""
        if self._fetch_one is None or len(unsettled) + 1 >= pages:
            return None
        try:
            return {r.id: self._fetch_one(client, r.id) for r in unsettled}
        except UpstreamError as exc:
            if exc.status != 404:
                raise
            return None

    def forget(self) -> None:
        """List the whole window next time."""
        self._held, self._listed_at = [], None
