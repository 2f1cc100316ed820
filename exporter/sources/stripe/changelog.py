"""The held subscription events (events.py), newest first, kept as columns.

A month of events is some 1.2 events per subscription: over a million at a
million subscriptions. Each held as a SubscriptionChange was an object, an int
for its time and a list slot, 136 bytes besides its 77-byte id; here an event
is a row of columns, its time in an array and its id in a buffer (ids.py), 78
bytes in all. The subscriptions after and before it are records shared with
today's where they are equal (history.settled), so most rows add no record.
A SubscriptionChange is made only for the rows asked for one (`[i]`);
history.py reads the columns.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from exporter.sources.stripe.ids import IdColumn
from exporter.sources.stripe.records import Subscription, SubscriptionChange

T = TypeVar("T")


class ChangeLog:
    """Rows newest first, as Stripe lists events; changed in place only by the event
    log (events.py), between polls."""

    def __init__(self, changes: Iterable[SubscriptionChange] = ()) -> None:
        self.id = IdColumn()
        self.created = array("q")
        self.type: list[str] = []
        self.subscription: list[str] = []
        self.after: list[Subscription | None] = []
        self.before: list[Subscription | None] = []
        self.puts_back = bytearray()
        self.pending: list[dict | None] = []
        for change in changes:
            self.append(change)

    def append(self, change: SubscriptionChange) -> None:
        """Add a row after the others: an older change, or one of the same second
        listed after them."""
        self.id.append(change.id)
        self.created.append(change.created)
        self.type.append(change.type)
        self.subscription.append(change.subscription)
        self.after.append(change.after)
        self.before.append(change.before)
        self.puts_back.append(change.puts_back)
        self.pending.append(change.pending)

    def __len__(self) -> int:
        return len(self.created)

    def __getitem__(self, row: int) -> SubscriptionChange:
        return SubscriptionChange(self.id[row], self.type[row], self.created[row],
                                  self.subscription[row], after=self.after[row],
                                  before=self.before[row], puts_back=bool(self.puts_back[row]),
                                  pending=self.pending[row])

    def __iter__(self) -> Iterator[SubscriptionChange]:
        return (self[row] for row in range(len(self)))

    def merge(self, new: "ChangeLog") -> None:
        """Put the rows of `new` in place by time: as sorted(new + held, key=created,
        reverse=True), where only the held rows within `new`'s span of time are
        sorted with it (the rest keep their place, as a stable sort would keep them).
        New rows that are all older or newer than the held ones, in order (a listing
        of the month, or going on with it), are put in as they are."""
        if not new:
            return
        start, stop = span(self.created, lambda created: created, [max(new.created),
                                                                   min(new.created)])
        if start < stop or any(a < b for a, b in zip(new.created, new.created[1:])):
            new = ChangeLog(sorted(list(new) + [self[row] for row in range(start, stop)],
                                   key=lambda change: change.created, reverse=True))
        self._put(start, stop, new)

    def prune(self, cutoff: int) -> None:
        """Drop the rows created before `cutoff` (the oldest, at the end)."""
        _, first_older = span(self.created, lambda created: created, [cutoff])
        self._put(first_older, len(self), ChangeLog())

    def settle(self, parse: Callable[[dict], SubscriptionChange]) -> None:
        """Parse again the rows still pending (history.settled)."""
        for row, event in enumerate(self.pending):
            if event is not None:
                self._put(row, row + 1, ChangeLog([parse(event)]))

    def _put(self, start: int, stop: int, rows: "ChangeLog") -> None:
        """Replace rows start:stop with `rows`."""
        for name in COLUMNS:
            getattr(self, name)[start:stop] = getattr(rows, name)


COLUMNS = ("id", "created", "type", "subscription", "after", "before", "puts_back", "pending")


def span(held: Sequence[T], created: Callable[[T], int], times: list[int]) -> tuple[int, int]:
    """Where the held items (newest first) from the newest of `times` to the oldest
    are: start, stop. Only they need sorting with new items of those times."""
    newest_first = lambda item: -created(item)  # noqa: E731 - bisect wants ascending keys
    start = bisect.bisect_left(held, -max(times), key=newest_first)  # the first not newer
    stop = bisect.bisect_right(held, -min(times), key=newest_first)  # the first older
    return start, stop
