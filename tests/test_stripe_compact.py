"""What the Stripe source keeps of subscriptions and events between polls: parsed
records, one record for the many equal states of a subscription, and JSON only
for an event that names something not known yet (compact.py, events.slim,
history.settled)."""

import copy
import json
from functools import partial

import pytest

import stripe_objects as so
from exporter.sources.stripe import history, parse
from exporter.sources.stripe.changelog import ChangeLog
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
    changes = ChangeLog([history.settled(slim(renewal(listed(), NOW - DAY)), PRICES, COUPONS, {},
                                         shared), upgrade])  # newest first
    [then] = history.subscriptions_at([today], changes, NOW - DAY - DAY // 2)
    assert then is today
    [then] = history.subscriptions_at([today], changes, NOW - 3 * DAY)
    assert then.items[0].quantity == 1


def test_one_listings_events_share_the_records_of_a_subscriptions_states():
    """held.sharing: an older event's subscription after it is the newer event's
    before it (one record), and a state equal to today's is today's record."""
    from exporter.sources.stripe.held import HeldSubscriptions

    held = HeldSubscriptions()
    today = parse.parse_subscription(listed(), PRICES, COUPONS)
    held._parsed[today.id] = today
    parse_event = partial(history.settled, prices=PRICES, coupons=COUPONS, known_discounts={},
                          shared=held.sharing())
    upgrade = parse_event(slim(so.event(  # newest first, as listed: 1 seat -> 2 seats
        "evt_u", "customer.subscription.updated", listed(), NOW - DAY,
        previous={"items": {"data": [so.item("si_a", SEAT, 1)]}})))
    renewal_before = parse_event(slim(renewal(listed(quantity=1), NOW - 2 * DAY)))
    assert upgrade.after is today and upgrade.before.items[0].quantity == 1
    assert renewal_before.after is upgrade.before and renewal_before.before is upgrade.before
    # another listing (another parser) shares today's records, not the last one's
    again = history.settled(slim(renewal(listed(quantity=1), NOW - 2 * DAY)), PRICES, COUPONS,
                            {}, held.sharing())
    assert again.after == upgrade.before and again.after is not upgrade.before


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


def test_subscriptions_of_the_same_price_and_quantity_share_their_items():
    shared = parse.SharedItems()
    multi = so.price("p_multi", 1000)
    multi["currency_options"] = {"eur": {"unit_amount": 900, "unit_amount_decimal": "900",
                                         "tax_behavior": "exclusive", "tiers": None}}
    prices = {**PRICES, "p_multi": parse.parse_price(multi)}

    def parsed(sub_id, items, currency="usd"):
        raw = so.subscription(sub_id, "cus_" + sub_id, items, currency=currency)
        record = parse.parse_subscription(raw, prices, COUPONS, shared=shared)
        assert record == parse.parse_subscription(raw, prices, COUPONS)  # the same record
        return record

    two_seats = [parsed(sub_id, [so.item("si_" + sub_id, SEAT, 2)]) for sub_id in ("a", "b")]
    assert two_seats[0].items is two_seats[1].items
    three = parsed("c", [so.item("si_c", SEAT, 3)])
    assert three.items[0] is not two_seats[0].items[0] and three.items[0].quantity == 3
    # a multi-currency price billed in euros: one item and one euro copy of the price
    first, second = (parsed(sub_id, [so.item("si_" + sub_id, multi)], "eur") for sub_id in "de")
    assert first.items is second.items and first.items[0].price.unit_amount == 900
    # two items: one tuple, of the items a single-item subscription has too
    both = [parsed(sub_id, [so.item("i1" + sub_id, SEAT, 2), so.item("i2" + sub_id, multi)])
            for sub_id in "fg"]
    assert both[0].items is both[1].items and both[0].items[0] is two_seats[0].items[0]
    # an item with a discount of its own is its own
    discounted = [parsed(sub_id, [so.item("si_" + sub_id, SEAT, 2, [so.discount(
        "di_" + sub_id, "TENTH")])]) for sub_id in "hi"]
    assert discounted[0].items is not discounted[1].items
    assert discounted[0].items[0].discounts[0].coupon.percent_off == 10


def test_a_new_price_list_makes_new_items():
    shared = parse.SharedItems()
    raw = so.subscription("sub_a", "cus_a", [so.item("si_a", SEAT, 2)])
    before = parse.parse_subscription(raw, PRICES, {}, shared=shared)
    relisted = {"p_seat": parse.parse_price(so.price("p_seat", 2500))}  # the same id, changed
    after = parse.parse_subscription(raw, relisted, {}, shared=shared)
    assert after.items[0].price is relisted["p_seat"] and after.items[0].price.unit_amount == 2500
    assert before.items[0].price.unit_amount == 2000  # what was made before is not touched


def test_a_shared_price_with_no_amount_in_the_currency_is_malformed():
    raw = so.subscription("sub_a", "cus_a", [so.item("si_a", SEAT)], currency="eur")
    with pytest.raises(parse.MalformedObject, match="price p_seat has no amount in eur"):
        parse.parse_subscription(raw, PRICES, {}, shared=parse.SharedItems())


def test_discounts_of_one_coupon_share_their_source():
    compactor = Compactor()
    first, second = (compactor.discount(json.loads(json.dumps(so.discount(d, TENTH))))
                     for d in ("di_1", "di_2"))
    assert first["source"] is second["source"] and first["object"] is second["object"]
    assert first["source"]["coupon"]["id"] == "TENTH" and first["id"] != second["id"]
    other = compactor.discount(so.discount("di_3", so.coupon("HALF", percent_off=50)))
    assert other["source"] is not first["source"]
    assert parse.parse_discount(first, COUPONS) == parse.parse_discount(
        so.discount("di_1", TENTH), COUPONS)
