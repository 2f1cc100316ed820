"""Charges, refunds and disputes of a trailing window, kept between polls.

The first poll lists the whole window. A later one lists only what was created
since the previous listing (less an overlap: Stripe's lists can show an object
a moment after its `created` time), or since the oldest held object that can
still change (a pending charge or refund, an open dispute), whichever is
earlier. Everything created from there on is replaced by what was listed, so
the result is what listing the whole window would give: objects are only ever
created in the present, and a settled one does not change.
"""

from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

from exporter.http import HttpClient

OVERLAP = 300  # seconds re-listed before the previous listing


class Record(Protocol):
    id: str
    status: str
    created: int


R = TypeVar("R", bound=Record)


class TrailingWindow(Generic[R]):
    def __init__(self, fetch: Callable[[HttpClient, int], list[R]],
                 settled: Callable[[R], bool]):
        self._fetch = fetch  # (client, created since) -> records
        self._settled = settled
        self._held: list[R] = []
        self._listed_at: int | None = None

    def update(self, client: HttpClient, since: int, now: int) -> list[R]:
        """The objects created since `since`, up to date as of `now`."""
        start = since
        if self._listed_at is not None:
            unsettled = [r.created for r in self._held if not self._settled(r)]
            start = max(since, min([self._listed_at - OVERLAP, *unsettled]))
        fetched = self._fetch(client, start)  # an error here keeps what was held
        self._held = [r for r in self._held if since <= r.created < start] + fetched
        self._listed_at = now
        return list(self._held)

    def forget(self) -> None:
        """List the whole window next time."""
        self._held, self._listed_at = [], None
