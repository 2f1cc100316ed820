"""MRR rules on hand-computed cases. Amounts in comments are worked by hand."""

import dataclasses
from decimal import Decimal

import pytest

from exporter.sources.stripe.mrr import (
    MrrRules,
    monthly,
    period_amount,
    revenue_kpis,
    running_mrr,
    subscription_mrr,
)
from exporter.sources.stripe.records import (
    Charge,
    Coupon,
    Discount,
    Price,
    Subscription,
    SubscriptionItem,
    Tier,
)

NOW = 1_800_000_000
D = Decimal


def price(amount="1000", interval="month", count=1, currency="usd", **kw) -> Price:
    return Price(id=kw.pop("id", "price_x"), currency=currency, interval=interval,
                 interval_count=count, unit_amount=None if amount is None else D(amount), **kw)


def sub(*items, status="active", currency="usd", discounts=(), customer="cus_1",
        cancel_at_period_end=False, id="sub_1") -> Subscription:
    built = tuple(i if isinstance(i, SubscriptionItem) else SubscriptionItem(i, 1)
                  for i in items)
    return Subscription(id=id, customer=customer, status=status, currency=currency, items=built,
                        discounts=tuple(discounts), cancel_at_period_end=cancel_at_period_end)


def item(p: Price, quantity=1, discounts=()) -> SubscriptionItem:
    return SubscriptionItem(p, quantity, tuple(discounts))


def percent(pct, duration="forever", end=None) -> Discount:
    return Discount("di", Coupon("c", duration, percent_off=D(str(pct))), end)


def amount_off(amount, currency="usd", duration="forever", end=None, options=None) -> Discount:
    return Discount("di", Coupon("c", duration, amount_off=D(amount), currency=currency,
                                 currency_options=options or {}), end)


# --- normalising to a month -------------------------------------------------

@pytest.mark.parametrize("interval,count,amount,monthly", [
    ("month", 1, "2000", D("2000")),
    ("month", 3, "30000", D("10000")),       # quarterly: 30000 / 3
    ("year", 1, "120000", D("10000")),       # 120000 / 12
    ("year", 2, "240000", D("10000")),       # 240000 / (12 x 2)
    ("week", 1, "1200", D("5200")),          # 1200 x 52 / 12
    ("week", 2, "1200", D("2600")),          # 1200 x 52 / 12 / 2
    ("day", 1, "120", D("3650")),            # 120 x 365 / 12
])
def test_interval_normalisation(interval, count, amount, monthly):
    assert subscription_mrr(sub(price(amount, interval, count)), NOW, MrrRules()) == monthly


def test_week_factor_is_exact_not_rounded():
    # 100 cents a week is 433.33... cents a month: keep the fraction until the end.
    assert monthly(D(100), "week", 1) == D(5200) / 12


def test_quantity_and_decimal_unit_amount():
    # unit_amount_decimal 12.5 cents x 3 seats = 37.5 cents
    assert period_amount(price("12.5"), 3) == D("37.5")
    assert period_amount(price("2000"), 0) == 0


def test_metered_prices_are_not_mrr():
    assert period_amount(price("500", usage_type="metered"), 10) == 0


# --- tiers -----------------------------------------------------------------

TIERS = (Tier(5, D(1000), D(0)), Tier(10, D(800), D(500)), Tier(None, D(600), D(0)))


@pytest.mark.parametrize("quantity,expected", [
    (5, 5000),    # 5 x 1000, the boundary belongs to the first tier
    (7, 6100),    # all 7 at 800, plus tier 2's flat 500
    (11, 6600),   # all 11 at 600
])
def test_volume_tiers(quantity, expected):
    p = price(None, billing_scheme="tiered", tiers_mode="volume", tiers=TIERS)
    assert period_amount(p, quantity) == expected


@pytest.mark.parametrize("quantity,expected", [
    (5, 5000),    # 5 x 1000; tier 2 not reached, so no flat fee
    (7, 7100),    # 5 x 1000 + 2 x 800 + 500 flat
    (12, 10700),  # 5000 + (5 x 800 + 500) + 2 x 600
])
def test_graduated_tiers(quantity, expected):
    p = price(None, billing_scheme="tiered", tiers_mode="graduated", tiers=TIERS)
    assert period_amount(p, quantity) == expected


def test_graduated_flat_fee_of_first_tier():
    tiers = (Tier(1, D(0), D(5000)), Tier(None, D(1000), D(0)))
    p = price(None, billing_scheme="tiered", tiers_mode="graduated", tiers=tiers)
    assert period_amount(p, 3) == 7000  # 5000 flat + 2 x 1000


def test_tiered_yearly_price_is_normalised():
    p = price(None, "year", billing_scheme="tiered", tiers_mode="volume", tiers=TIERS)
    assert subscription_mrr(sub(item(p, 7)), NOW, MrrRules()) == D(6100) / 12


@pytest.mark.parametrize("rounding,expected", [("up", 1500), ("down", 1000)])
def test_transform_quantity(rounding, expected):
    # 25 seats billed per pack of 10: 3 packs rounding up, 2 rounding down, at 500 a pack
    p = price("500", divide_by=10, round=rounding)
    assert period_amount(p, 25) == expected


# --- discounts ---------------------------------------------------------------

def test_percent_off_forever():
    assert subscription_mrr(sub(price("10000"), discounts=[percent(25.5)]), NOW, MrrRules()) == 7450


def test_amount_off_is_per_billing_period():
    # Yearly 120000 with 12000 off a year: (120000 - 12000) / 12 = 9000 a month
    s = sub(price("120000", "year"), discounts=[amount_off("12000")])
    assert subscription_mrr(s, NOW, MrrRules()) == 9000


def test_repeating_discount_applies_until_its_end():
    running = sub(price("10000"), discounts=[percent(50, "repeating", end=NOW + 1)])
    ended = sub(price("10000"), discounts=[percent(50, "repeating", end=NOW)])
    assert subscription_mrr(running, NOW, MrrRules()) == 5000
    assert subscription_mrr(ended, NOW, MrrRules()) == 10000


def test_once_discount_is_a_config_option():
    s = sub(price("10000"), discounts=[percent(50, "once")])
    assert subscription_mrr(s, NOW, MrrRules()) == 10000
    assert subscription_mrr(s, NOW, MrrRules(apply_once_discounts=True)) == 5000


def test_discount_never_below_zero():
    s = sub(price("10000"), price("3000"), discounts=[amount_off("20000")])
    assert subscription_mrr(s, NOW, MrrRules()) == 0


def test_item_and_subscription_discounts():
    # item A 10000 at 50 % off = 5000, item B 4000; then 1000 off the subscription
    a = item(price("10000"), discounts=[percent(50)])
    s = sub(a, item(price("4000")), discounts=[amount_off("1000")])
    assert subscription_mrr(s, NOW, MrrRules()) == 8000


def test_discounts_apply_in_order():
    forward = sub(price("10000"), discounts=[percent(10), amount_off("500")])   # 9000 - 500
    backward = sub(price("10000"), discounts=[amount_off("500"), percent(10)])  # 9500 x 0.9
    assert subscription_mrr(forward, NOW, MrrRules()) == 8500
    assert subscription_mrr(backward, NOW, MrrRules()) == 8550


def test_amount_off_in_another_currency():
    eur = price("10000", currency="eur")
    usd_only = sub(eur, currency="eur", discounts=[amount_off("1000", "usd")])
    with_option = sub(eur, currency="eur",
                      discounts=[amount_off("1000", "usd", options={"eur": D(900)})])
    assert subscription_mrr(usd_only, NOW, MrrRules()) == 10000
    assert subscription_mrr(with_option, NOW, MrrRules()) == 9100


def test_item_amount_off_on_a_quarterly_price():
    # 30000 a quarter with 3000 off each quarter: (30000 - 3000) / 3 = 9000 a month
    quarterly = item(price("30000", "month", 3), discounts=[amount_off("3000")])
    assert subscription_mrr(sub(quarterly), NOW, MrrRules()) == 9000


def test_coupon_restricted_to_products():
    # 50 % off product A only: A 10000 -> 5000, B 4000 untouched
    only_a = Discount("di", Coupon("c", "forever", percent_off=D(50),
                                   applies_to=frozenset({"prod_a"})))
    s = sub(item(price("10000", product="prod_a")), item(price("4000", product="prod_b")),
            discounts=[only_a])
    assert subscription_mrr(s, NOW, MrrRules()) == 9000
    # an amount off restricted to B takes at most B's 4000
    b_off = Discount("di", Coupon("c", "forever", amount_off=D(6000), currency="usd",
                                  applies_to=frozenset({"prod_b"})))
    s = sub(item(price("10000", product="prod_a")), item(price("4000", product="prod_b")),
            discounts=[b_off])
    assert subscription_mrr(s, NOW, MrrRules()) == 10000


def test_multi_currency_price_uses_the_subscription_currency():
    from exporter.sources.stripe.records import CurrencyOption

    p = price("1000", currency="usd", currency_options={"eur": CurrencyOption(D("900"))})
    assert p.in_currency("eur").unit_amount == 900
    assert p.in_currency("usd") is p
    with pytest.raises(KeyError):
        p.in_currency("gbp")


def test_three_decimal_currency():
    # 12.500 KWD is sent as 12500 thousandths
    s = sub(price("12500", currency="kwd"), currency="kwd")
    kpis = revenue_kpis([s], [], now=NOW, fx_rates={"usd": D(1), "kwd": D("3.25")})
    assert kpis.mrr_by_currency == {"kwd": D("12.5")}
    assert kpis.mrr == D("40.625")


# --- which subscriptions count ----------------------------------------------

@pytest.mark.parametrize("status", ["trialing", "incomplete", "incomplete_expired", "unpaid",
                                    "paused", "canceled"])
def test_statuses_not_counted(status):
    assert subscription_mrr(sub(price("10000"), status=status), NOW, MrrRules()) == 0


def test_past_due_counted_unless_configured():
    s = sub(price("10000"), status="past_due")
    assert subscription_mrr(s, NOW, MrrRules()) == 10000
    assert subscription_mrr(s, NOW, MrrRules(include_past_due=False)) == 0


def test_cancel_at_period_end_counted_unless_configured():
    s = sub(price("10000"), cancel_at_period_end=True)
    assert subscription_mrr(s, NOW, MrrRules()) == 10000
    assert subscription_mrr(s, NOW, MrrRules(include_cancel_at_period_end=False)) == 0


def test_cancel_at_a_date_follows_the_same_rule():
    s = dataclasses.replace(sub(price("10000")), cancel_at=NOW + 86400)
    assert subscription_mrr(s, NOW, MrrRules()) == 10000
    assert subscription_mrr(s, NOW, MrrRules(include_cancel_at_period_end=False)) == 0


# --- the value kept on each record ------------------------------------------

def test_the_value_kept_on_a_record_is_its_own_for_these_rules_only():
    once = sub(price("10000"), discounts=[percent(50, "once")])
    applied = MrrRules(apply_once_discounts=True)
    for _ in range(2):  # asked again, each rules' value, whatever was kept last
        assert subscription_mrr(once, NOW, MrrRules()) == 10000
        assert subscription_mrr(once, NOW, applied) == 5000
    # equal records, one valued and one not, are still equal (held.shared reuses them)
    assert once == sub(price("10000"), discounts=[percent(50, "once")])
    # replace makes a record of its own: its value is its own, not the one kept
    bigger = dataclasses.replace(once, items=(SubscriptionItem(price("30000"), 1),))
    assert subscription_mrr(bigger, NOW, applied) == 15000


def test_a_repeating_discount_with_an_end_is_valued_at_each_moment():
    s = sub(price("10000"), discounts=[percent(50, "repeating", end=NOW)])
    assert subscription_mrr(s, NOW - 1, MrrRules()) == 5000  # in force
    assert subscription_mrr(s, NOW, MrrRules()) == 10000  # ended: not the value before
    assert subscription_mrr(s, NOW - 1, MrrRules()) == 5000
    item_discount = sub(item(price("10000"), discounts=[percent(20, "repeating", end=NOW)]))
    assert subscription_mrr(item_discount, NOW - 1, MrrRules()) == 8000
    assert subscription_mrr(item_discount, NOW, MrrRules()) == 10000


def test_running_mrr_is_the_value_whatever_the_status():
    canceled = sub(price("10000"), status="canceled")
    assert subscription_mrr(canceled, NOW, MrrRules()) == 0
    assert running_mrr(canceled, NOW, MrrRules()) == 10000  # had_paid_before asks this
    assert subscription_mrr(canceled, NOW, MrrRules()) == 0  # and the kept value changes nothing
    assert running_mrr(sub(status="active"), NOW, MrrRules()) == 0  # no items


# --- the whole poll ---------------------------------------------------------

FX = {"usd": D(1), "eur": D("1.10"), "jpy": D("0.0067")}


def test_revenue_kpis_across_currencies():
    subscriptions = [
        sub(price("10000"), customer="cus_a", id="s1"),                          # $100
        sub(price("5000", currency="eur"), currency="eur", customer="cus_a", id="s2"),  # 50 EUR
        sub(price("120000", "year", currency="jpy"), currency="jpy", customer="cus_b",
            id="s3"),                                                              # 10000 JPY/month
        sub(price("2000", currency="gbp"), currency="gbp", customer="cus_c", id="s4"),  # no rate
        sub(price("9900"), status="trialing", customer="cus_d", id="s5"),
        sub(price("9900"), status="canceled", customer="cus_e", id="s6"),
        sub(price("9900"), customer="cus_f", discounts=[percent(100)], id="s7"),  # free
    ]
    kpis = revenue_kpis(subscriptions, [], now=NOW, fx_rates=FX)
    # 100 + 50 x 1.10 + 10000 x 0.0067 = 100 + 55 + 67 = 222; GBP left out
    assert kpis.mrr == D("222")
    assert kpis.mrr_by_currency == {"usd": D(100), "eur": D(50), "jpy": D(10000),
                                    "gbp": D(20)}
    assert kpis.missing_fx == {"gbp": 1}
    assert kpis.subscriptions_by_status == {"active": 5, "trialing": 1, "canceled": 1}
    # a, b and c pay; f's subscription is 100 % off; d trials; e left
    assert kpis.paying_customers == 3
    # ARPA divides the converted MRR by the customers in it: a and b, not GBP-only c
    assert kpis.paying_customers_converted == 2
    assert kpis.arpa == D(111)


def test_a_customer_paying_in_a_currency_with_a_rate_and_one_without_is_converted():
    """Whichever subscription comes first: ARPA counts the customer, whose converted
    MRR is in kpi_mrr, once."""
    usd = sub(price("10000"), customer="cus_a", id="s1")
    gbp = sub(price("2000", currency="gbp"), currency="gbp", customer="cus_a", id="s2")
    for subscriptions in ([usd, gbp], [gbp, usd]):
        kpis = revenue_kpis(subscriptions, [], now=NOW, fx_rates=FX)
        assert (kpis.paying_customers, kpis.paying_customers_converted) == (1, 1)
        assert kpis.mrr == D(100) and kpis.arpa == D(100)


def test_failed_payments_last_24_hours():
    charges = [
        Charge("ch1", "failed", D(250000), "usd", NOW - 60),          # $2,500
        Charge("ch2", "failed", D(100000), "eur", NOW - 86_400),      # 1,000 EUR = $1,100, edge
        Charge("ch3", "failed", D(100000), "jpy", NOW - 3600),        # 100,000 JPY = $670
        Charge("ch4", "failed", D(500), "usd", NOW - 86_401),         # too old
        Charge("ch5", "succeeded", D(900000), "usd", NOW - 60),       # not a failure
        Charge("ch6", "failed", D(700), "gbp", NOW - 60),             # no rate: count only
    ]
    kpis = revenue_kpis([], charges, now=NOW, fx_rates=FX)
    assert kpis.failed_payments == 4
    assert kpis.failed_payments_amount == D("4270")  # 2500 + 1100 + 670
    assert kpis.missing_fx == {"gbp": 1}


def test_no_paying_customers_has_no_arpa():
    kpis = revenue_kpis([sub(price("100"), status="trialing")], [], now=NOW, fx_rates=FX)
    assert kpis.mrr == 0 and kpis.paying_customers == 0 and kpis.arpa is None


def test_zero_decimal_currency_is_not_divided():
    s = sub(price("5000", currency="jpy"), currency="jpy")
    kpis = revenue_kpis([s], [], now=NOW, fx_rates=FX)
    assert kpis.mrr_by_currency == {"jpy": D(5000)}
    assert kpis.mrr == D("33.5")  # 5000 x 0.0067


def test_customer_mrr_sums_each_customers_subscriptions_in_the_reporting_currency():
    from exporter.sources.stripe.mrr import customer_mrr

    fx = {"usd": D(1), "eur": D("1.1")}
    subscriptions = [
        sub(price("2000"), customer="cus_a", id="s1"),
        sub(price("2000"), customer="cus_b", id="s2"),
        sub(price("2000"), customer="cus_b", id="s3"),
        sub(price("1000", currency="eur"), currency="eur", customer="cus_b", id="s4"),
        sub(price("2000"), customer="cus_c", id="s5", status="trialing"),  # not counted
        sub(price("500", currency="jpy"), currency="jpy", customer="cus_d", id="s6"),  # no rate
        sub(price("0"), customer="cus_e", id="s7"),  # a free plan pays nothing
    ]
    result = customer_mrr(subscriptions, NOW, fx)
    # cus_b: 20.00 + 20.00 + 10.00 EUR x 1.1 = 51.00
    assert result == {"cus_a": D("20.00"), "cus_b": D("51.00")}
    # an amount billed by many is converted once, and held by each one-subscription customer
    again = customer_mrr(subscriptions[:2], NOW, fx)
    assert again["cus_a"] is again["cus_b"]
