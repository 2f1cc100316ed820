"""TrailingWindow: listing only what is new gives what listing the whole window gives."""

from decimal import Decimal

import pytest

from exporter.sources.stripe.records import Charge
from exporter.sources.stripe.window import OVERLAP, TrailingWindow


class Upstream:
    """Charges by id; `fetch` answers created[gte] as Stripe does and records it."""

    def __init__(self):
        self.charges: dict[str, Charge] = {}
        self.asked: list[int] = []

    def add(self, id, status, created):
        self.charges[id] = Charge(id, status, Decimal(100), "usd", created)

    def fetch(self, client, since):
        self.asked.append(since)
        return [c for c in self.charges.values() if c.created >= since]


def test_later_listings_start_at_the_previous_one_or_the_oldest_unsettled():
    up = Upstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending")
    up.add("ch_old", "failed", 1_000)
    up.add("ch_pending", "pending", 5_000)
    up.add("ch_paid", "succeeded", 6_000)

    def ids(records):
        return sorted((c.id, c.status) for c in records)

    assert ids(window.update(None, since=0, now=10_000)) == \
        [("ch_old", "failed"), ("ch_paid", "succeeded"), ("ch_pending", "pending")]
    up.charges["ch_pending"] = Charge("ch_pending", "failed", Decimal(100), "usd", 5_000)
    up.add("ch_new", "failed", 11_000)
    # the pending charge (5,000) is older than the last listing less the overlap (9,700)
    assert ids(window.update(None, since=0, now=12_000)) == \
        [("ch_new", "failed"), ("ch_old", "failed"), ("ch_paid", "succeeded"),
         ("ch_pending", "failed")]
    assert up.asked == [0, 5_000]
    up.add("ch_late", "failed", 11_900)  # listable only now, created before the last listing
    assert ("ch_late", "failed") in ids(window.update(None, since=2_000, now=13_000))
    assert up.asked[-1] == 12_000 - OVERLAP
    # the window moved past ch_old: it is gone, whether listed again or not
    assert ids(window.update(None, since=2_000, now=13_100)) == ids(up.fetch(None, 2_000))


def test_a_failed_listing_keeps_what_was_held_and_forget_lists_it_whole():
    up = Upstream()
    window = TrailingWindow(up.fetch, lambda c: True)
    up.add("ch_1", "failed", 1_000)
    window.update(None, since=0, now=2_000)

    def broken(client, since):
        raise RuntimeError("HTTP 500")

    window._fetch = broken
    with pytest.raises(RuntimeError):
        window.update(None, since=0, now=3_000)
    window._fetch = up.fetch
    assert [c.id for c in window.update(None, since=0, now=4_000)] == ["ch_1"]
    assert up.asked[-1] == 2_000 - OVERLAP  # from the last listing that succeeded
    window.forget()
    window.update(None, since=0, now=5_000)
    assert up.asked[-1] == 0
