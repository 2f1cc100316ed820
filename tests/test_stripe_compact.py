"""What the Stripe source keeps of subscriptions and events between polls: parsed
records, one record for the many equal states of a subscription, and JSON only
for an event that names something not known yet (compact.py, events.slim,
history.settled)."""

import copy
import json

import stripe_objects as so
from exporter.sources.stripe import history, parse
from exporter.sources.stripe.compact import Compactor
from exporter.sources.stripe.events import slim

NOW = 1_800_000_000
DAY = 86400
SEAT = so.price("p_seat", 2000)
PRICES = {"p_seat": parse.parse_price(SEAT)}
TENTH = so.coupon("TENTH", percent_off=10)
COUPONS = {"TENTH": parse.parse_coupon(TENTH)}


def listed(quantity=2, **kw) -> dict:
    """A subscription as the list (or an event) sends it."""
    return so.subscription("sub_a", "cus_a", [so.item("si_a", SEAT, quantity)], **kw)


def renewal(obj: dict, created: int) -> dict:
    """A renewal's event: a new period on the item, a new invoice; nothing the KPIs read."""
    old_items = copy.deepcopy(obj["items"])
    old_items["data"][0]["current_period_end"] = created
    return so.event("evt_r", "customer.subscription.updated", obj, created,
                    previous={"items": old_items, "latest_invoice": "in_old"})


def test_compacted_subscription_keeps_what_parse_reads_and_not_the_item_list_url():
    compact = Compactor().subscription(listed())
    assert "payment_settings" not in compact and "plan" not in compact["items"]["data"][0]
    assert "url" not in compact["items"]
    assert parse.parse_subscription(compact, PRICES, {}) == \
        parse.parse_subscription(listed(), PRICES, {})


def test_records_share_the_strings_that_repeat():
    # each decoded from its own JSON text, as two pages of a listing are
    first, second = (parse.parse_subscription(json.loads(json.dumps(listed())), PRICES, {})
                     for _ in range(2))
    assert first.status is second.status and first.customer is second.customer
    assert first.currency is second.currency


def test_a_record_holds_one_int_for_a_start_at_creation_and_no_item_id():
    started = json.loads(json.dumps({**listed(), "created": NOW, "start_date": NOW}))
    record = parse.parse_subscription(started, PRICES, {})
    assert record.start_date is record.created == NOW  # decoded as two ints, kept as one
    later = parse.parse_subscription({**started, "start_date": NOW + DAY}, PRICES, {})
    assert (later.created, later.start_date) == (NOW, NOW + DAY)
    assert not hasattr(record.items[0], "id")  # nothing valued reads it


def test_a_renewal_is_todays_record_before_and_after():
    today = parse.parse_subscription(listed(), PRICES, COUPONS)
    held = {today.id: today}

    def shared(sub):
        return held[sub.id] if held.get(sub.id) == sub else sub

    change = history.settled(slim(renewal(listed(), NOW - DAY)), PRICES, COUPONS, {}, shared)
    assert change.after is today and change.before is today and change.pending is None
    # an upgrade from one seat keeps a record of its own for before
    upgrade = history.settled(slim(so.event(
        "evt_u", "customer.subscription.updated", listed(), NOW - 2 * DAY,
        previous={"items": {"data": [so.item("si_a", SEAT, 1)]}})), PRICES, COUPONS, {}, shared)
    assert upgrade.after is today and upgrade.before.items[0].quantity == 1
    changes = [history.settled(slim(renewal(listed(), NOW - DAY)), PRICES, COUPONS, {}, shared),
               upgrade]  # newest first
    [then] = history.subscriptions_at([today], changes, NOW - DAY - DAY // 2)
    assert then is today
    [then] = history.subscriptions_at([today], changes, NOW - 3 * DAY)
    assert then.items[0].quantity == 1


def test_emptied_previous_attributes_rebuild_the_same_past():
    slimmed = slim(renewal(listed(), NOW - DAY))
    assert slimmed["data"]["previous_attributes"] == {}
    as_sent = history.settled(renewal(listed(), NOW - DAY), PRICES, COUPONS, {})
    assert history.settled(slimmed, PRICES, COUPONS, {}).before == as_sent.before


def test_an_event_naming_an_unknown_discount_is_parsed_again_once_it_is_known():
    discount = so.discount("di_1", "TENTH")
    # events name discounts by id
    event = slim(so.event("evt_d", "customer.subscription.updated", listed(discounts=["di_1"]),
                          NOW - DAY, previous={"discounts": []}))
    unknown = history.settled(event, PRICES, COUPONS, {})
    assert unknown.after.discounts == () and unknown.pending is event  # kept to parse again
    known = history.settled(unknown.pending, PRICES, COUPONS, {"di_1": discount})
    assert [d.coupon.id for d in known.after.discounts] == ["TENTH"]
    assert known.before.discounts == () and known.pending is None


def test_an_event_whose_price_is_not_listed_stays_pending():
    other = so.price("p_new", 5000)
    obj = so.subscription("sub_a", "cus_a", [so.item("si_b", other)])
    event = slim(so.event("evt_n", "customer.subscription.created", obj, NOW - DAY))
    change = history.settled(event, PRICES, COUPONS, {})
    assert change.after.items[0].price.unit_amount == 5000  # from the embedded price
    assert change.pending is event
    listed_now = {**PRICES, "p_new": parse.parse_price(other)}
    assert history.settled(event, listed_now, COUPONS, {}).pending is None
