"""What the Stripe source keeps of subscriptions and events (compact.py, events.slim):
only what the KPIs read, one copy of what repeats, and nothing that changes a number."""

import copy
import json

import stripe_objects as so
from exporter.sources.stripe import history, parse
from exporter.sources.stripe.compact import Compactor
from exporter.sources.stripe.events import slim

NOW = 1_800_000_000
DAY = 86400
SEAT = so.price("p_seat", 2000)


def listed(quantity=2, **kw) -> dict:
    """A subscription as the list (or an event) sends it: a fresh decode each time."""
    return so.subscription("sub_a", "cus_a", [so.item("si_a", SEAT, quantity)], **kw)


def test_compacted_subscription_keeps_what_parse_reads_and_not_the_item_list_url():
    compact = Compactor().subscription(listed())
    assert "payment_settings" not in compact and "plan" not in compact["items"]["data"][0]
    assert "url" not in compact["items"]
    assert compact["items"]["data"][0]["quantity"] == 2 and compact["status"] == "active"


def test_repeated_strings_are_one_object():
    compactor = Compactor()
    # each decoded from its own JSON text, as two pages of a listing are
    first, second = (compactor.subscription(json.loads(json.dumps(listed()))) for _ in range(2))
    assert first["status"] is second["status"] and first["customer"] is second["customer"]
    assert first["items"]["data"][0]["price"] is second["items"]["data"][0]["price"]


def test_an_equal_subscription_is_the_copy_seen_last_and_a_changed_one_replaces_it():
    compactor = Compactor()
    one = compactor.shared(compactor.subscription(listed()))
    again = compactor.shared(compactor.subscription(listed()))
    assert again is one
    changed = compactor.shared(compactor.subscription(listed(quantity=3)))
    assert changed is not one and changed["items"]["data"][0]["quantity"] == 3
    # the changed copy is the one shared from now on
    assert compactor.shared(compactor.subscription(listed(quantity=3))) is changed
    compactor.keep_only(set())
    assert compactor.shared(compactor.subscription(listed(quantity=3))) is not changed


def test_renewal_events_share_the_listed_object_and_put_back_nothing():
    compactor = Compactor()
    current = compactor.shared(compactor.subscription(listed()))
    # a renewal: a new period on the item, a new invoice; nothing the KPIs read
    old_items = copy.deepcopy(listed()["items"])
    old_items["data"][0]["current_period_end"] = NOW - DAY
    renewal = slim(so.event("evt_r", "customer.subscription.updated", listed(), NOW - DAY,
                            previous={"items": old_items, "latest_invoice": "in_old"}),
                   compactor)
    assert renewal["data"]["object"] is current
    assert renewal["data"]["previous_attributes"] == {}
    # an upgrade keeps what it puts back
    one_seat = {"items": {"data": [so.item("si_a", SEAT, 1)]}}
    upgrade = slim(so.event("evt_u", "customer.subscription.updated", listed(), NOW - 2 * DAY,
                            previous=one_seat), compactor)
    assert upgrade["data"]["object"] is current
    assert upgrade["data"]["previous_attributes"]["items"]["data"][0]["quantity"] == 1
    # and the past is rebuilt as it was: two seats a day and a half ago, one before
    events = [renewal, upgrade]  # newest first
    [then] = history.subscriptions_at([current], events, NOW - DAY - DAY // 2)
    assert then["items"]["data"][0]["quantity"] == 2
    [then] = history.subscriptions_at([current], events, NOW - 3 * DAY)
    assert then["items"]["data"][0]["quantity"] == 1


def test_a_renewal_left_as_it_came_rebuilds_the_same_past():
    """Emptying a no-op previous_attributes changes nothing: the same event slimmed
    without the compactor's sharing rebuilds the same subscription."""
    old_items = copy.deepcopy(listed()["items"])
    old_items["data"][0]["current_period_end"] = NOW - DAY
    raw = so.event("evt_r", "customer.subscription.updated", listed(), NOW - DAY,
                   previous={"items": old_items})
    compactor = Compactor()
    current = compactor.shared(compactor.subscription(listed()))
    slimmed = slim(copy.deepcopy(raw), compactor)
    unslimmed = copy.deepcopy(raw)
    assert slimmed["data"]["previous_attributes"] == {}
    for at in (NOW - 2 * DAY, NOW):
        [a] = history.subscriptions_at([current], [slimmed], at)
        [b] = history.subscriptions_at([listed()], [unslimmed], at)
        assert parse.parse_subscription(a, {}, {}) == parse.parse_subscription(b, {}, {})
