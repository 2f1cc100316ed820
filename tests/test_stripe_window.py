"""TrailingWindow: listing only what is new gives what listing the whole window gives."""

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

import stripe_objects as so
from exporter.http import UpstreamError
from exporter.secrets import Secret
from exporter.sources.stripe import StripeConfig
from exporter.sources.stripe.parse import MalformedObject
from exporter.sources.stripe.records import Charge
from exporter.sources.stripe.source import make_client
from exporter.sources.stripe.window import (
    CHANGE_EVENT_TYPES,
    OVERLAP,
    RETENTION,
    ChangeFeed,
    TrailingWindow,
)


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


class ByIdUpstream(Upstream):
    """Upstream that also answers one object by id, as GET /v1/charges/{id} does."""

    def __init__(self):
        super().__init__()
        self.asked_by_id: list[str] = []

    def fetch_one(self, client, charge_id):
        self.asked_by_id.append(charge_id)
        if charge_id not in self.charges:
            raise UpstreamError("stripe", "GET", f"/v1/charges/{charge_id}", "http_4xx", 404)
        return self.charges[charge_id]


def settled_charges(up, count, created):
    for i in range(count):
        up.add(f"ch_{i}", "succeeded", created + i)


def test_a_few_long_unsettled_objects_are_asked_by_id_not_relisted():
    """One pending charge among 350 older than the last listing: asking it by id and
    listing since the last listing is 2 requests, listing from it 4 pages."""
    up = ByIdUpstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending", up.fetch_one)
    up.add("ch_pending", "pending", 1_000)
    settled_charges(up, 350, 1_001)
    window.update(None, since=0, now=10_000)
    up.charges["ch_pending"] = Charge("ch_pending", "succeeded", Decimal(100), "usd", 1_000)
    up.add("ch_new", "pending", 11_000)
    held = window.update(None, since=0, now=12_000)
    assert up.asked == [0, 10_000 - OVERLAP] and up.asked_by_id == ["ch_pending"]
    assert sorted(held, key=lambda c: c.id) == sorted(up.fetch(None, 0), key=lambda c: c.id)
    # ch_new is still pending, and a listing from it is one page: cheaper than by id
    window.update(None, since=0, now=13_000)
    assert up.asked[-1] == 11_000 and up.asked_by_id == ["ch_pending"]


def test_unsettled_objects_are_relisted_when_that_is_cheaper_or_one_is_gone():
    up = ByIdUpstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending", up.fetch_one)
    for i, created in enumerate((1_000, 1_001, 1_002)):
        up.add(f"ch_pending_{i}", "pending", created)
    settled_charges(up, 150, 1_003)  # 153 held: listing from the oldest is 2 pages
    window.update(None, since=0, now=10_000)
    window.update(None, since=0, now=12_000)
    assert up.asked[-1] == 1_000 and up.asked_by_id == []  # 3 by id + 1 page > 2 pages
    # one pending among 400: by id, but Stripe no longer has it, so the listing it is
    up = ByIdUpstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending", up.fetch_one)
    up.add("ch_pending", "pending", 1_000)
    settled_charges(up, 400, 1_001)
    window.update(None, since=0, now=10_000)
    del up.charges["ch_pending"]
    held = window.update(None, since=0, now=12_000)
    assert up.asked_by_id == ["ch_pending"] and up.asked[-1] == 1_000
    assert sorted(c.id for c in held) == sorted(up.charges)


def test_with_change_notes_only_the_named_objects_are_asked_again():
    """Events say what changed: the unsettled charge no event names is not asked
    again, the named one is (settled or not: a succeeded refund can still fail)."""
    up = ByIdUpstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending", up.fetch_one)
    up.add("ch_pending", "pending", 1_000)
    up.add("ch_paid", "succeeded", 1_001)
    settled_charges(up, 350, 1_002)
    window.note_changes(None)  # the first poll: the events cannot tell yet
    window.update(None, since=0, now=10_000)
    window.note_changes(set())
    window.update(None, since=0, now=11_000)
    assert up.asked_by_id == [] and up.asked == [0, 10_000 - OVERLAP]
    up.charges["ch_paid"] = Charge("ch_paid", "failed", Decimal(100), "usd", 1_001)
    window.note_changes({"ch_paid", "ch_unknown"})  # ch_unknown: not held, not asked
    held = window.update(None, since=0, now=12_000)
    assert up.asked_by_id == ["ch_paid"]
    assert sorted(held, key=lambda c: c.id) == sorted(up.fetch(None, 0), key=lambda c: c.id)


def test_notes_add_up_until_an_update_succeeds_and_none_means_ask_every_unsettled():
    up = ByIdUpstream()
    window = TrailingWindow(up.fetch, lambda c: c.status != "pending", up.fetch_one)
    up.add("ch_a", "pending", 1_000)
    up.add("ch_b", "pending", 1_001)
    up.add("ch_c", "pending", 1_002)
    settled_charges(up, 400, 1_003)
    window.update(None, since=0, now=10_000)

    def broken(client, since):
        raise RuntimeError("HTTP 500")

    window.note_changes({"ch_a"})
    window._fetch = broken
    with pytest.raises(RuntimeError):
        window.update(None, since=0, now=11_000)
    window._fetch = up.fetch
    window.note_changes({"ch_b"})
    window.update(None, since=0, now=12_000)
    assert sorted(up.asked_by_id) == ["ch_a", "ch_a", "ch_b"]  # a again: that poll failed
    up.asked_by_id.clear()
    window.note_changes({"ch_a"})
    window.note_changes(None)  # the events could not tell: every unsettled one
    window.update(None, since=0, now=13_000)
    assert sorted(up.asked_by_id) == ["ch_a", "ch_b", "ch_c"]


API = "https://api.stripe.test"


def feed_client():
    cfg = StripeConfig(api_key=Secret("sk_test_window1234"), base_url=API)
    return make_client(cfg, sleep=lambda s: None)


@responses.activate
def test_the_change_feed_lists_the_change_events_since_the_last_poll():
    client, feed = feed_client(), ChangeFeed()
    assert feed.changed(client, 10_000) is None and not responses.calls  # nothing held yet
    refund = {"id": "re_1", "object": "refund", "status": "failed"}
    dispute = {"id": "dp_1", "object": "dispute", "status": "won"}
    responses.add(responses.GET, API + "/v1/events", json=so.page([
        so.event("evt_2", "refund.failed", refund, 10_500),
        so.event("evt_1", "charge.dispute.closed", dispute, 10_400)]))
    assert feed.changed(client, 11_000) == {"re_1", "dp_1"}
    query = parse_qs(urlsplit(responses.calls[0].request.url).query)
    assert query["created[gte]"] == [str(10_000 - OVERLAP)]
    assert query["types[]"] == list(CHANGE_EVENT_TYPES) and len(CHANGE_EVENT_TYPES) <= 20
    # an event naming no object fails the poll, and the next lists from the same place
    responses.add(responses.GET, API + "/v1/events", json=so.page([
        {"id": "evt_3", "type": "refund.updated", "created": 11_500, "data": {}}]))
    with pytest.raises(MalformedObject, match="evt_3"):
        feed.changed(client, 12_000)
    responses.add(responses.GET, API + "/v1/events", json=so.page([]))
    assert feed.changed(client, 12_100) == set()
    assert parse_qs(urlsplit(responses.calls[-1].request.url).query)["created[gte]"] == \
        [str(11_000 - OVERLAP)]
    # after longer than Stripe keeps events, they cannot tell
    calls = len(responses.calls)
    assert feed.changed(client, 12_100 + RETENTION) is None and len(responses.calls) == calls
