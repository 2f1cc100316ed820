"""Revenue dynamics on hand-computed histories.

The histories are Stripe objects and events as the API sends them (built from
Stripe's fixtures); every expected number is worked out by hand in a comment.
"""

import json
from decimal import Decimal

import pytest

import stripe_objects as so
from exporter.sources.stripe import dynamics, history, parse
from exporter.sources.stripe.changelog import ChangeLog
from exporter.sources.stripe.invoice_lines import InvoiceLines
from exporter.sources.stripe.mrr import MrrRules, customer_mrr
from exporter.sources.stripe.records import InvoiceLine, Price, Subscription

D = Decimal
NOW = 1_800_000_000
DAY = 86400
W = NOW - 30 * DAY  # window start
FX = {"usd": D(1), "eur": D("1.10")}


# --- the bridge, from customer MRR at both ends -------------------------------

def test_bridge_classifies_every_movement_and_holds_exactly():
    start = {"A": D(100), "B": D(200), "C": D(300), "F": D(50)}
    end = {"A": D(150), "B": D(120), "D": D(80), "E": D(60), "F": D(50)}
    bridge = dynamics.mrr_bridge(start, end, paid_before={"E", "C"})
    assert bridge.movements == {"new": 80, "expansion": 50, "contraction": 80, "churn": 300,
                                "reactivation": 60}
    assert bridge.customers == {"new": 1, "expansion": 1, "contraction": 1, "churn": 1,
                                "reactivation": 1}
    assert (bridge.start, bridge.end) == (650, 460)
    m = bridge.movements
    assert bridge.start + m["new"] + m["expansion"] + m["reactivation"] - m["contraction"] \
        - m["churn"] == bridge.end
    assert bridge.paying_at_start == 4                          # A, B, C, F
    assert bridge.growth_rate == D(-190) / 650
    assert bridge.customer_churn_rate == D(1) / 4
    assert bridge.gross_revenue_churn_rate == D(380) / 650      # churn 300 + contraction 80
    assert bridge.net_revenue_churn_rate == D(330) / 650        # ... - expansion 50
    assert bridge.net_revenue_retention == D(320) / 650         # (650 + 50 - 80 - 300) / 650


def test_empty_start_has_no_rates():
    bridge = dynamics.mrr_bridge({}, {"A": D(10)}, set())
    assert bridge.growth_rate is None and bridge.customer_churn_rate is None
    assert bridge.net_revenue_retention is None and bridge.movements["new"] == 10


def test_cohort_retention_leaves_out_newcomers():
    # A grew 100 -> 150, B left (200 -> 0), C joined later and is not in the cohort
    assert dynamics.cohort_retention({"A": D(100), "B": D(200)},
                                     {"A": D(150), "C": D(999)}) == (300, 150)


def test_lifetime_value_and_its_undefined_case():
    assert dynamics.lifetime_value(D(500), D("0.8"), D("0.02")) == 20000  # 500 x 0.8 / 0.02
    assert dynamics.lifetime_value(D(500), D("0.8"), D(0)) is None
    assert dynamics.lifetime_value(None, D("0.8"), D("0.02")) is None


def test_largest_churn_arr():
    day_ago = {"A": D(900), "B": D(1000), "C": D(5000)}
    now = {"A": D(0), "C": D(5000)}  # A and B churned; C still pays
    assert dynamics.largest_churn_arr(day_ago, now) == 12000  # 12 x B's 1000
    assert dynamics.largest_churn_arr(day_ago, day_ago) == 0


def test_dynamics_while_the_events_or_the_year_are_being_read():
    """None for a moment not known yet: what needs it is None, the rest is computed
    (the 1y growth from MRR now, not from the missing bridge)."""
    def compute(window_start, day_ago, year_ago):
        return dynamics.revenue_dynamics(
            now_mrr={"A": D(150), "C": D(50)}, window_start_mrr=window_start,
            day_ago_mrr=day_ago, year_ago_mrr=year_ago, paid_before=set(),
            paid_after_trial=set(), subscriptions=[], refunds=[], disputes=[],
            arpa=D(100), gross_margin=D("0.8"), fx_rates=FX, now=NOW, window=30 * DAY)

    reading = compute(None, None, {"A": D(100), "B": D(60)})
    assert reading.bridge is None and reading.lifetime_value is None
    assert reading.largest_churn_arr is None
    assert reading.mrr == 200 and reading.annual_growth_rate == D(40) / 160  # (200 - 160) / 160
    assert (reading.cohort_start, reading.cohort_now) == (160, 150)  # A and B; B left
    known = compute({"A": D(100), "B": D(60)}, {"B": D(60)}, None)
    assert known.bridge.customers["churn"] == 1 and known.largest_churn_arr == 720  # 12 x B's 60
    assert known.lifetime_value == D(100) * D("0.8") / D("0.5")  # churn 1 of 2
    assert known.cohort_start is None and known.annual_growth_rate is None


# --- trials --------------------------------------------------------------------

def trial(id, status, trial_start, trial_end, ended_at=None) -> Subscription:
    return Subscription(id=id, customer=id, status=status, currency="usd", items=(),
                        start_date=trial_start, trial_start=trial_start, trial_end=trial_end,
                        ended_at=ended_at)


def test_trials():
    subs = [
        trial("running", "trialing", NOW - 5 * DAY, NOW + 9 * DAY),           # active, started
        trial("converted", "active", NOW - 20 * DAY, NOW - 6 * DAY),          # started, converted
        trial("paid_then_left", "canceled", NOW - 40 * DAY, NOW - 26 * DAY,
              ended_at=NOW - 2 * DAY),                                         # converted
        trial("lapsed", "canceled", NOW - 25 * DAY, NOW - 11 * DAY,
              ended_at=NOW - 11 * DAY),                                        # started, lapsed
        trial("paused", "paused", NOW - 35 * DAY, NOW - 21 * DAY),            # lapsed
        trial("old", "active", NOW - 90 * DAY, NOW - 76 * DAY),               # outside the window
        trial("first_failed", "past_due", NOW - 30 * DAY + 1, NOW - 16 * DAY),  # lapsed: never paid
    ]
    # Stripe says paid_then_left paid an invoice after its trial; first_failed did not.
    checked = [s.id for s in dynamics.trials_ended_in(subs, NOW, 30 * DAY)
               if dynamics.needs_payment_check(s)]
    assert checked == ["paid_then_left", "first_failed"]
    kpis = dynamics.trial_kpis(subs, NOW, 30 * DAY, paid_after_trial={"paid_then_left"})
    assert (kpis.active, kpis.started, kpis.ended, kpis.converted) == (1, 4, 5, 2)
    assert kpis.conversion_rate == D("0.4")


# --- rebuilding the past from events -------------------------------------------

def changes_of(events, prices=None, known=None):
    """The events as the source keeps them: slimmed, then parsed once (settled)."""
    from exporter.sources.stripe.events import slim
    return ChangeLog(history.settled(slim(e), prices or {}, {}, known or {}) for e in events)


def kept(lines):
    """Invoice lines as the 1y cohort keeps them (invoice_lines.py)."""
    return InvoiceLines((0, line) for line in lines)


def today(current, prices=None):
    """Today's subscriptions as listed (discounts expanded), parsed."""
    return [parse.parse_subscription(s, prices or {}, {}) for s in current]


def rebuilt(current, events, at, prices=None, known=None):
    return history.subscriptions_at(today(current, prices), changes_of(events, prices, known), at)


def test_put_back_merges_nested_hashes_and_replaces_lists():
    obj = {"status": "active", "items": {"object": "list", "data": [1, 2]},
           "metadata": {"a": "1", "b": "2"}}
    before = history.put_back(obj, {"status": "trialing", "items": {"data": [1]},
                                    "metadata": {"b": "0"}})
    assert before == {"status": "trialing", "items": {"object": "list", "data": [1]},
                      "metadata": {"a": "1", "b": "0"}}
    assert obj == {"status": "active", "items": {"object": "list", "data": [1, 2]},
                   "metadata": {"a": "1", "b": "2"}}  # the event itself is untouched


MONTHLY_100 = so.price("p100", 10000)
MONTHLY_50 = so.price("p50", 5000)
MONTHLY_40 = so.price("p40", 4000)
SEAT_20 = so.price("p20", 2000)
EUR_100 = so.price("peur100", 10000, currency="eur")
EUR_200 = so.price("peur200", 20000, currency="eur")
TRIAL_30 = so.price("p30", 3000)


def items(*specs) -> dict:
    """An items list object as a subscription (or previous_attributes) carries it."""
    return {"object": "list", "has_more": False, "url": "/v1/subscription_items",
            "data": [so.item(f"si_{p['id']}_{q}", p, q) for p, q in specs]}


def sub(id, customer, specs, **kw) -> dict:
    return so.subscription(id, customer, items(*specs)["data"], **kw)


def history_fixture():
    """Today's subscriptions and the last 30 days of events, for ten customers."""
    half_off = so.coupon("HALF3", percent_off=50, duration="repeating")
    ended_discount = so.discount("di_half", half_off, end=NOW - 10 * DAY)
    current = [
        # multi: keeps $100 and adds a $50 subscription in the window -> expansion 50
        sub("s_multi1", "multi", [(MONTHLY_100, 1)], created=W - 100 * DAY),
        sub("s_multi2", "multi", [(MONTHLY_50, 1)], created=NOW - 5 * DAY),
        # up: 1 -> 3 seats at $20 -> expansion 40
        sub("s_up", "up", [(SEAT_20, 3)], created=W - 50 * DAY),
        # down: $100 plan -> $40 plan -> contraction 60
        sub("s_down", "down", [(MONTHLY_40, 1)], created=W - 50 * DAY),
        # gone: $50, canceled in the window -> churn 50
        sub("s_gone", "gone", [(MONTHLY_50, 1)], status="canceled", created=W - 50 * DAY,
            ended_at=NOW - 3 * DAY),
        # fresh: first subscription ever, in the window -> new 40
        sub("s_fresh", "fresh", [(MONTHLY_40, 1)], created=NOW - 2 * DAY),
        # back: churned 90 days ago, subscribed again in the window -> reactivation 100
        sub("s_back_old", "back", [(MONTHLY_100, 1)], status="canceled",
            created=NOW - 400 * DAY, ended_at=NOW - 90 * DAY),
        sub("s_back_new", "back", [(MONTHLY_100, 1)], created=NOW - 1 * DAY),
        # eur: 100 EUR -> 200 EUR, at 1.10 both ends -> expansion 110 (no fx movement)
        sub("s_eur", "eur", [(EUR_200, 1)], currency="eur", created=W - 50 * DAY),
        # disc: $100 at half price until its discount ended 10 days ago; Stripe took the
        # discount off the subscription at the next invoice -> expansion 50
        sub("s_disc", "disc", [(MONTHLY_100, 1)], created=W - 60 * DAY),
        # conv: trial ended in the window and converted at $30 -> new 30
        sub("s_conv", "conv", [(TRIAL_30, 1)], created=W - 5 * DAY, trial_start=W - 5 * DAY,
            trial_end=W + 9 * DAY),
        # lapse: trial canceled at its end in the window -> nothing moved (0 -> 0)
        sub("s_lapse", "lapse", [(TRIAL_30, 1)], status="canceled", created=W - 4 * DAY,
            trial_start=W - 4 * DAY, trial_end=W + 10 * DAY, ended_at=W + 10 * DAY),
    ]
    by_id = {s["id"]: s for s in current}

    def obj(id, **changes):
        return {**by_id[id], **changes}

    # Events name discounts by id, as Stripe sends them.
    def ids(o):
        return {**o, "discounts": [d["id"] if isinstance(d, dict) else d for d in o["discounts"]]}

    events = [  # newest first
        so.event("e10", "customer.subscription.created", ids(by_id["s_back_new"]), NOW - DAY),
        so.event("e9", "customer.subscription.deleted", ids(by_id["s_gone"]), NOW - 3 * DAY),
        so.event("e8", "customer.subscription.created", ids(by_id["s_fresh"]), NOW - 2 * DAY),
        so.event("e7", "customer.subscription.created", ids(by_id["s_multi2"]), NOW - 5 * DAY),
        so.event("e6", "customer.subscription.updated", ids(by_id["s_up"]), NOW - 7 * DAY,
                 previous={"items": items((SEAT_20, 1))}),
        so.event("e5", "customer.subscription.updated", ids(by_id["s_down"]), NOW - 8 * DAY,
                 previous={"items": items((MONTHLY_100, 1))}),
        so.event("e4", "customer.subscription.updated", ids(by_id["s_eur"]), NOW - 9 * DAY,
                 previous={"items": items((EUR_100, 1))}),
        so.event("e4b", "customer.subscription.updated", ids(by_id["s_disc"]), NOW - 9 * DAY,
                 previous={"discounts": ["di_half"]}),
        so.event("e3", "customer.subscription.deleted", ids(obj("s_lapse")), W + 10 * DAY),
        so.event("e2", "customer.subscription.updated", ids(obj("s_conv")), W + 9 * DAY,
                 previous={"status": "trialing"}),
        # older than the window: must not be undone
        so.event("e1", "customer.subscription.updated", ids(obj("s_multi1")), W - DAY,
                 previous={"status": "past_due"}),
    ]
    for o in current:  # as listed by /v1/subscriptions, discounts are expanded
        assert all(isinstance(d, dict) for d in o["discounts"])
    prices = {p["id"]: parse.parse_price(p)
              for p in (MONTHLY_100, MONTHLY_50, MONTHLY_40, SEAT_20, EUR_100, EUR_200, TRIAL_30)}
    known = {"di_half": ended_discount}
    return current, events, prices, known


def test_history_bridge_covers_every_movement():
    current, events, prices, known = history_fixture()
    subscriptions = [parse.parse_subscription(s, prices, {}) for s in current]
    end = customer_mrr(subscriptions, NOW, FX, MrrRules())
    start = history.customer_mrr_at(subscriptions, changes_of(events, prices, known), W,
                                    now_mrr=end, fx_rates=FX, rules=MrrRules())

    # At the window start (hand-worked): multi 100, up 20, down 100, gone 50,
    # eur 100 EUR = 110, disc 100 at half = 50; conv and lapse were trialing.
    assert start == {"multi": 100, "up": 20, "down": 100, "gone": 50, "eur": D("110.00"),
                     "disc": 50}
    # Now: multi 150, up 60, down 40, fresh 40, back 100, eur 220, disc 100, conv 30.
    assert end == {"multi": 150, "up": 60, "down": 40, "fresh": 40, "back": 100,
                   "eur": D("220.00"), "disc": 100, "conv": 30}

    paid_before = dynamics.had_paid_before(subscriptions, W)
    assert "back" in paid_before and "fresh" not in paid_before and "conv" not in paid_before
    bridge = dynamics.mrr_bridge(start, end, paid_before)
    # expansion: multi 50 + up 40 + eur 110 + disc 50; contraction: down 60; churn: gone 50;
    # new: fresh 40 + conv 30; reactivation: back 100
    assert bridge.movements == {"new": 70, "expansion": 250, "contraction": 60, "churn": 50,
                                "reactivation": 100}
    assert bridge.start == 430 and bridge.end == 740
    assert bridge.start + 70 + 250 + 100 - 60 - 50 == bridge.end

    trials = dynamics.trial_kpis(subscriptions, NOW, 30 * DAY)
    assert (trials.ended, trials.converted) == (2, 1)  # conv converted, lapse did not


def test_a_discount_never_seen_is_skipped_in_the_past():
    current, events, prices, _ = history_fixture()
    subscriptions = today(current, prices)
    start = history.customer_mrr_at(subscriptions, changes_of(events, prices), W,
                                    now_mrr=customer_mrr(subscriptions, NOW, FX, MrrRules()),
                                    fx_rates=FX, rules=MrrRules())
    assert start["disc"] == 100  # valued without the discount it cannot resolve


def test_the_past_values_anew_only_the_customers_that_were_otherwise():
    """customer_mrr_at reads today's MRR for a customer nothing changed since the
    moment, and values the others at it: one a renewal left as it was, one with a
    discount whose end fell in between (no event: today's record still carries it),
    one created since, one whose plan changed."""
    half_off = so.coupon("HALF3", percent_off=50, duration="repeating")
    at = NOW - DAY
    plain = sub("s_plain", "plain", [(MONTHLY_100, 1)], created=W - 90 * DAY)
    renewed = sub("s_renew", "renewed", [(MONTHLY_50, 1)], created=W - 90 * DAY)
    ending = sub("s_end", "ending", [(MONTHLY_100, 1)], created=W - 90 * DAY,
                 discounts=[so.discount("di_end", half_off, end=NOW - DAY // 2)])
    fresh = sub("s_fresh", "fresh", [(MONTHLY_40, 1)], created=NOW - 3600)
    upgraded = sub("s_up", "upgraded", [(MONTHLY_100, 1)], created=W - 90 * DAY)
    events = [
        so.event("e_up", "customer.subscription.updated", upgraded, NOW - 2 * 3600,
                 previous={"items": items((MONTHLY_50, 1))}),
        so.event("e_fresh", "customer.subscription.created", fresh, NOW - 3600 - 1),
        so.event("e_renew", "customer.subscription.updated", renewed, NOW - 5 * 3600,
                 previous={"latest_invoice": "in_old"}),
    ]
    prices = {p["id"]: parse.parse_price(p) for p in (MONTHLY_100, MONTHLY_50, MONTHLY_40)}
    subscriptions = today([plain, renewed, ending, fresh, upgraded], prices)
    now_mrr = customer_mrr(subscriptions, NOW, FX, MrrRules())
    assert now_mrr == {"plain": 100, "renewed": 50, "ending": 100, "fresh": 40, "upgraded": 100}
    past = history.customer_mrr_at(subscriptions, changes_of(events, prices), at,
                                   now_mrr=now_mrr, fx_rates=FX, rules=MrrRules())
    # Hand-worked: ending was at half then; fresh did not exist; upgraded paid 50.
    then = {"plain": 100, "renewed": 50, "ending": 50, "upgraded": 50}
    assert past == then and dict(past) == then and len(past) == 4
    assert past.touched == {"ending", "fresh", "upgraded"}
    assert "fresh" not in past and past.get("fresh") is None and past.get("plain") == 100
    assert sorted(past) == sorted(then) and sorted(past.items()) == sorted(then.items())
    # The same as valuing every subscription as it was then.
    assert past == customer_mrr(history.subscriptions_at(subscriptions, changes_of(events, prices),
                                                         at), at, FX, MrrRules())


# --- a year ago, from paid invoices ------------------------------------------

def line(customer, amount, start, end, price_id, currency="usd", proration=False):
    return InvoiceLine(customer, currency, D(amount), start, end, price_id, proration)


def test_customer_mrr_from_invoices():
    at = NOW - 365 * DAY
    prices = {
        "monthly": Price("monthly", "usd", "month"),
        "yearly": Price("yearly", "usd", "year"),
        "metered": Price("metered", "usd", "month", usage_type="metered"),
    }
    lines = [
        line("A", 9000, at - 10 * DAY, at + 20 * DAY, "monthly"),          # $90 (after discount)
        line("A", 120000, at - 100 * DAY, at + 265 * DAY, "yearly"),       # $1,200 a year = $100
        line("A", 500, at - 10 * DAY, at + 20 * DAY, "metered"),           # usage: not MRR
        line("A", 3000, at - 5 * DAY, at + 20 * DAY, "monthly", proration=True),  # proration
        line("B", 5000, at - 40 * DAY, at - 10 * DAY, "monthly"),          # does not cover `at`
        line("C", 7300, at - 73 * DAY, at + 73 * DAY, "deleted"),          # 146 days for $73
        line("D", 10000, at - 10 * DAY, at + 20 * DAY, "monthly", currency="eur"),  # 100 EUR
        line("E", 10000, at - 10 * DAY, at + 20 * DAY, "monthly", currency="gbp"),  # no rate
    ]
    mrr = history.customer_mrr_from_invoices(kept(lines), at, prices, FX)
    assert set(mrr) == {"A", "C", "D"}
    same = history.customer_mrr_from_invoices(kept([line("X", 9000, at - DAY, at + DAY, "monthly"),
                                                    line("Y", 9000, at - DAY, at + DAY, "monthly")]),
                                              at, prices, FX)
    assert same["X"] == 90 and same["X"] is same["Y"]  # one Decimal for equal amounts
    assert mrr["A"] == 190
    # unknown price: by period length, 73 x (365 / 12 days) / 146 days = 15.2083...
    assert float(mrr["C"]) == pytest.approx(73 * 365 / 12 / 146, abs=1e-9)
    assert mrr["D"] == D("110.00")


def test_invoice_lines_after_their_discounts():
    invoice = so.fixture("invoice")
    invoice.update(customer="cus_x")
    first = invoice["lines"]["data"][0]
    first.update(amount=10000, currency="usd", discount_amounts=[{"amount": 2500,
                                                                  "discount": "di_1"}],
                 period={"start": 100, "end": 200})
    first["parent"] = {"type": "subscription_item_details", "subscription_item_details": {
        "subscription": "sub_1", "subscription_item": "si_1", "proration": False}}
    first["pricing"] = {"type": "price_details", "price_details": {"price": "price_1"}}
    item_line = dict(first, parent={"type": "invoice_item_details"})
    invoice["lines"]["data"] = [first, item_line]
    [parsed] = parse.parse_invoice_lines(invoice)
    assert parsed == InvoiceLine("cus_x", "usd", D(7500), 100, 200, "price_1", False,
                                 subscription="sub_1", subscription_item="si_1")
    # undiscounted lines of one amount hold one Decimal (the cohort keeps a year of them)
    first["discount_amounts"] = []
    amounts = [parse.parse_invoice_lines(json.loads(json.dumps(invoice)))[0].amount
               for _ in range(2)]
    assert amounts == [D(10000)] * 2 and amounts[0] is amounts[1]


def test_two_updates_in_the_window_undo_to_the_first_state():
    current = sub("s_two", "two", [(SEAT_20, 3)], created=W - 50 * DAY)
    events = [  # newest first: 2 -> 3 seats, then 1 -> 2 seats before it
        so.event("u2", "customer.subscription.updated", current, NOW - 10 * DAY,
                 previous={"items": items((SEAT_20, 2))}),
        so.event("u1", "customer.subscription.updated", current, NOW - 20 * DAY,
                 previous={"items": items((SEAT_20, 1))}),
    ]
    [then] = rebuilt([current], events, W)
    assert then.items[0].quantity == 1  # not 2: undo back to the earliest


def test_same_second_created_and_updated_means_it_did_not_exist():
    current = sub("s_new", "new", [(SEAT_20, 2)], created=NOW - DAY)
    events = [so.event("u", "customer.subscription.updated", current, NOW - DAY,
                       previous={"items": items((SEAT_20, 1))}),
              so.event("c", "customer.subscription.created", current, NOW - DAY)]
    assert rebuilt([current], events, W) == []


def test_deletion_after_unpaid_is_not_churn_of_a_paying_customer():
    big = so.price("p1000", 100000)
    canceled = sub("s_big", "big", [(big, 1)], status="canceled", created=W - 90 * DAY,
                   ended_at=NOW - 12 * 3600)
    unpaid = {**canceled, "status": "unpaid", "ended_at": None, "canceled_at": None}
    events = [so.event("d", "customer.subscription.deleted", canceled, NOW - 12 * 3600),
              so.event("u", "customer.subscription.updated", unpaid, NOW - 5 * DAY,
                       previous={"status": "past_due"})]
    [day_ago] = rebuilt([canceled], events, NOW - DAY)
    assert day_ago.status == "unpaid"  # from the last event before, not a guess
    prices = {"p1000": parse.parse_price(big)}
    subscriptions = today([canceled], prices)
    mrr_day_ago = history.customer_mrr_at(subscriptions, changes_of(events, prices), NOW - DAY,
                                          now_mrr=customer_mrr(subscriptions, NOW, FX, MrrRules()),
                                          fx_rates=FX, rules=MrrRules())
    assert dynamics.largest_churn_arr(mrr_day_ago, {}) == 0  # unpaid MRR was already 0


def test_trial_canceled_just_after_its_end_was_trialing():
    lapsed = sub("s_l", "l", [(TRIAL_30, 1)], status="canceled", created=W - 4 * DAY,
                 trial_start=W - 4 * DAY, trial_end=W + 10 * DAY, ended_at=W + 10 * DAY + 90)
    events = [so.event("d", "customer.subscription.deleted", lapsed, W + 10 * DAY + 90)]
    [then] = rebuilt([lapsed], events, W)
    assert then.status == "trialing" and then.ended_at is None
    paused = {**lapsed, "status": "paused", "ended_at": None}
    events = [so.event("p", "customer.subscription.paused", paused, W + 10 * DAY)]
    [then] = rebuilt([paused], events, W)
    assert then.status == "trialing"


def test_paid_before_needs_money_and_a_day_past_the_trial():
    from exporter.sources.stripe.records import Coupon, Discount, SubscriptionItem

    def record(customer, amount, *, discounts=(), trial_end=None, ended_at=None,
               status="active"):
        item = SubscriptionItem(Price("p", "usd", "month", unit_amount=D(amount)), 1)
        return Subscription(id=customer, customer=customer, status=status, currency="usd",
                            items=(item,), discounts=discounts, start_date=W - 100 * DAY,
                            trial_end=trial_end, ended_at=ended_at)

    free_forever = Discount("di", Coupon("c", "forever", percent_off=D(100)))
    subs = [
        record("free_plan", 0),                                        # $0 plan
        record("full_coupon", 5000, discounts=(free_forever,)),        # 100 % off
        record("trial_only", 5000, status="canceled", trial_end=W - 50 * DAY,
               ended_at=W - 50 * DAY + 90),                            # canceled 90 s after trial
        record("churned", 5000, status="canceled", ended_at=W - 60 * DAY),  # paid, then left
    ]
    assert dynamics.had_paid_before(subs, W) == {"churned"}
    subs.append(record("also_churned", 3000, status="canceled", ended_at=W - 40 * DAY))
    # Only the customers asked about are looked up.
    assert dynamics.had_paid_before(subs, W, among={"also_churned", "free_plan"}) == \
        {"also_churned"}
    assert dynamics.had_paid_before(subs, W, among=set()) == set()


def test_new_payers_are_paying_at_the_end_and_not_at_the_start():
    start = {"kept": D(10), "left": D(20), "was_zero": D(0)}
    end = {"kept": D(10), "new": D(5), "was_zero": D(7), "zero_now": D(0)}
    assert dynamics.new_payers(start, end) == {"new", "was_zero"}


def test_invoice_valuation_keeps_the_latest_period_and_drops_ended_subscriptions():
    at = NOW - 365 * DAY
    prices = {"monthly": Price("monthly", "usd", "month"), "yearly": Price("yearly", "usd", "year")}

    def item_line(sub, item, amount, start, end, price):
        return InvoiceLine("A", "usd", D(amount), start, end, price, False, sub, item)

    lines = [
        # switched monthly -> yearly 5 days before `at`: the old month still "covers" it
        item_line("s1", "si1", 5000, at - 20 * DAY, at + 10 * DAY, "monthly"),
        item_line("s1", "si1", 120000, at - 5 * DAY, at + 360 * DAY, "yearly"),
        # a subscription canceled 3 days before `at` (its paid month still covers it)
        item_line("s2", "si2", 9900, at - 20 * DAY, at + 10 * DAY, "monthly"),
    ]
    mrr = history.customer_mrr_from_invoices(kept(lines), at, prices, FX,
                                             ended={"s2": at - 3 * DAY})
    assert mrr == {"A": 100}  # the yearly plan only: 120000 cents / 12


def test_billed_lines_at_every_step_from_one_sweep():
    """Daily steps over a plan change, a cancellation and a gap between two periods:
    each step keeps the latest period of each item that covers it."""
    t0 = NOW - 300 * DAY
    steps = [t0 + k * DAY for k in range(6)]  # t0 .. t0 + 5d

    def item_line(sub, item, amount, start, end, price="monthly", proration=False):
        return InvoiceLine("A", "usd", D(amount), start, end, price, proration, sub, item)

    lines = [
        item_line("s1", "si1", 5000, t0 - 10 * DAY, t0 + 20 * DAY),              # month 1
        item_line("s1", "si1", 120000, t0 + 2 * DAY, t0 + 367 * DAY, "yearly"),  # from day 2
        item_line("s1", "si1", 700, t0 + DAY, t0 + 20 * DAY, proration=True),    # never
        item_line("s2", "si2", 9900, t0 - 5 * DAY, t0 + 3 * DAY),                # ends day 3
        item_line("s2", "si2", 9900, t0 + 4 * DAY, t0 + 34 * DAY),               # from day 4
        item_line("s3", "si3", 2500, t0 - DAY, t0 + 29 * DAY),                   # canceled day 1
    ]
    billed = {at: sorted((line.subscription, int(line.amount)) for line in kept)
              for at, kept in history.billed_lines_at(lines, list(reversed(steps)),
                                                      ended={"s3": t0 + DAY})}
    assert list(billed) == steps  # in time order, whatever order they were asked in
    assert billed == {
        steps[0]: [("s1", 5000), ("s2", 9900), ("s3", 2500)],
        steps[1]: [("s1", 5000), ("s2", 9900)],       # s3 ended at t0 + 1d exactly
        steps[2]: [("s1", 120000), ("s2", 9900)],     # the yearly period started then
        steps[3]: [("s1", 120000)],                   # s2's period ended at t0 + 3d
        steps[4]: [("s1", 120000), ("s2", 9900)],
        steps[5]: [("s1", 120000), ("s2", 9900)],
    }
    for at in steps:  # one moment alone gives the same lines
        assert sorted((l.subscription, int(l.amount)) for l in
                      history.billed_lines(kept(lines), at, ended={"s3": t0 + DAY})) == billed[at]


def test_billed_lines_from_the_columns_are_the_sweeps_lines_in_its_order():
    """billed_lines reads one moment from the kept columns; on random lines (plan
    changes within an item, periods starting the same second, prorations, lines
    without an item, ended subscriptions) it gives billed_lines_at's lines for that
    step, in the same order (customer sums add Decimals in that order)."""
    import random

    rng = random.Random(5)
    for trial in range(300):
        lines = []
        unit = rng.choice([1, 30_000])  # seconds, or periods over days (sorted a day at a time)
        for _ in range(rng.randint(0, 25)):
            start = rng.randint(0, 20) * unit
            sub = rng.choice(["s1", "s2", "s3", None])
            lines.append(InvoiceLine(rng.choice("AB"), "usd", D(rng.randint(0, 9) * 100), start,
                                     start + rng.randint(0, 12) * unit, "monthly",
                                     proration=rng.random() < 0.15, subscription=sub,
                                     subscription_item=rng.choice(["si1", "si2", None])
                                     if sub else None))
        ended = {"s2": rng.randint(0, 30) * unit}
        assert [line for _, line in kept(lines)] == lines  # the columns give the lines back
        for at in range(0, 32 * unit, 3 * unit):
            [(_, swept)] = history.billed_lines_at(lines, [at], ended)
            assert list(history.billed_lines(kept(lines), at, ended)) == swept, (trial, at)
    with pytest.raises(ValueError, match="not whole minor units"):  # an array holds ints
        kept([InvoiceLine("A", "usd", D("0.5"), 0, 1, "monthly")])


def test_billed_kpis_from_lines():
    prices = {"monthly": Price("monthly", "usd", "month"), "yearly": Price("yearly", "usd", "year"),
              "metered": Price("metered", "usd", "month", usage_type="metered")}
    lines = [
        InvoiceLine("A", "usd", D(9000), 0, 1, "monthly"),      # $90
        InvoiceLine("A", "usd", D(120000), 0, 1, "yearly"),     # $100 a month
        InvoiceLine("B", "eur", D(10000), 0, 1, "monthly"),     # 100 EUR = $110
        InvoiceLine("C", "usd", D(0), 0, 1, "monthly"),         # a free plan: not paying
        InvoiceLine("D", "usd", D(800), 0, 1, "metered"),       # usage: not MRR
        InvoiceLine("E", "gbp", D(5000), 0, 1, "monthly"),      # no rate: by currency only
    ]
    kpis = history.billed_kpis(lines, prices, FX)
    assert kpis.mrr == D("300.00")                              # 90 + 100 + 110
    assert kpis.mrr_by_currency == {"usd": D(190), "eur": D(100), "gbp": D(50)}
    assert (kpis.paying_customers, kpis.paying_customers_converted) == (3, 2)  # A, B, E / A, B
    assert kpis.arpa == D(150)                                  # 300 over A and B
    assert kpis.missing_fx == {"gbp": 1}
    assert kpis.subscriptions_by_status == {}                   # not on invoices


def test_the_bridge_of_mrr_billed_ending_at_each_step():
    """Two daily steps, each with its window 30 days before: A expands, B churns,
    C is new, D comes back after paying long ago; E pays the same at both ends."""
    t = NOW - 200 * DAY
    steps, window = [t, t + DAY], 30 * DAY
    start = t - window
    prices = {"monthly": Price("monthly", "usd", "month")}

    def month(customer, amount, begin, sub):
        return InvoiceLine(customer, "usd", D(amount), begin, begin + 30 * DAY, "monthly",
                           False, sub, "si_" + sub)

    lines = [
        month("A", 10000, start - 10 * DAY, "a"), month("A", 15000, t - 5 * DAY, "a"),
        month("B", 20000, start - 10 * DAY, "b"),                 # no later period: churned
        month("C", 8000, t - 5 * DAY, "c"),                       # first paid in the window
        month("D", 6000, start - 100 * DAY, "d"), month("D", 6000, t - 5 * DAY, "d2"),
        month("E", 5000, start - 10 * DAY, "e"), month("E", 5000, t - 5 * DAY, "e"),
    ]
    billed = history.billed_steps(lines, steps, window, prices, FX)
    assert list(billed) == steps
    bridge = billed[t].bridge
    assert (bridge.start, bridge.end) == (350, 340)              # A 100 B 200 E 50 -> A 150 C 80 D 60 E 50
    assert bridge.movements == {"new": 80, "expansion": 50, "contraction": 0, "churn": 200,
                                "reactivation": 60}
    assert bridge.customers == {"new": 1, "expansion": 1, "contraction": 0, "churn": 1,
                                "reactivation": 1}
    assert bridge.paying_at_start == 3
    assert sorted(line.customer for line in billed[t].lines) == ["A", "C", "D", "E"]
    # a day later the window starts after A's, B's and E's first periods began, and
    # they still cover it (30 days from start - 10 d): the same bridge
    assert billed[t + DAY].bridge.movements == bridge.movements


def test_slimmed_event_keeps_what_the_rebuild_needs():
    from exporter.sources.stripe.events import slim

    current = sub("s_up", "up", [(SEAT_20, 3)], created=W - 50 * DAY)
    renewal = so.event("r", "customer.subscription.updated", current, NOW - DAY,
                       previous={"latest_invoice": "in_old"})  # nothing MRR-related changed
    upgrade = so.event("u", "customer.subscription.updated", current, NOW - 2 * DAY,
                       previous={"items": items((SEAT_20, 1)), "latest_invoice": "in_x"})
    slimmed = [slim(renewal), slim(upgrade)]
    assert "plan" not in slimmed[1]["data"]["object"]["items"]["data"][0]
    assert "payment_settings" not in slimmed[1]["data"]["object"]
    assert slimmed[0]["data"]["previous_attributes"] == {}
    # the renewal is still undone as an update (a no-op), the upgrade back to one seat
    settled = [history.settled(e, {}, {}, {}) for e in slimmed]
    assert settled[0].puts_back and settled[0].before is settled[0].after  # one record
    [then] = history.subscriptions_at(today([current]), ChangeLog(settled), NOW - 3 * DAY)
    assert then.status == "active" and then.items[0].quantity == 1
    [then] = history.subscriptions_at(today([current]), ChangeLog(settled[:1]), NOW - 3 * DAY)
    assert then.items[0].quantity == 3
