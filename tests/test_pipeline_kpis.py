"""Sales pipeline KPI math on hand-computed deals and leads (exporter/sources/crm/pipeline.py)."""

from decimal import Decimal as D

import pytest

from exporter.sources.crm.pipeline import (
    DAY, HOUR, OTHER, Closed, Deal, Lead, Stage, capped_stages, closed, funnel, open_pipeline,
    lead_moved_since, response, stage_changes, stalled,
)

NOW = 1_800_000_000
QUALIFIED = Stage("Sales", "Qualified", D("0.2"))
PROPOSAL = Stage("Sales", "Proposal", D("0.6"))
RENEWAL = Stage("Renewals", "Negotiation", D("0.8"))
WON = Stage("Sales", "Closed won", D(1), is_closed=True, is_won=True)
LOST = Stage("Sales", "Closed lost", D(0), is_closed=True)


def deal(stage, amount, created_days_ago, closed_days_ago=None, changed_days_ago=None, id="d"):
    return Deal(id, stage, None if amount is None else D(amount), NOW - created_days_ago * DAY,
                None if closed_days_ago is None else NOW - closed_days_ago * DAY,
                None if changed_days_ago is None else NOW - changed_days_ago * DAY)


def test_open_pipeline_by_stage_and_weighted_by_probability():
    deals = [deal(QUALIFIED, "10000", 5), deal(QUALIFIED, "5000", 3), deal(PROPOSAL, "20000", 9),
             deal(PROPOSAL, None, 2),  # no amount: counted as a deal, adds nothing
             deal(RENEWAL, "50000", 40), deal(WON, "99999", 50, 1)]  # closed: not open
    assert open_pipeline(deals) == {
        ("Sales", "Qualified"): (D(15000), D(3000), 2),     # 15,000 x 0.2
        ("Sales", "Proposal"): (D(20000), D(12000), 2),     # 20,000 x 0.6
        ("Renewals", "Negotiation"): (D(50000), D(40000), 1),
    }


def test_closed_deals_in_the_window():
    deals = [
        deal(WON, "60000", 50, 10),   # won 10 days ago after 40 days
        deal(WON, "30000", 25, 5),    # won after 20 days
        deal(WON, None, 70, 20),      # won, no amount: in the count and the cycle, not the average
        deal(LOST, "45000", 30, 2),
        deal(WON, "80000", 200, 40),  # won 40 days ago: outside 30 days, inside 90
        deal(QUALIFIED, "1000", 3),   # open
    ]
    assert closed(deals, NOW, 30 * DAY) == Closed(
        won=3, lost=1, won_amount=D(90000), win_rate=0.75,   # 3 / (3 + 1)
        average_deal=D(45000),                                # 90,000 / the 2 with an amount
        cycle_days=40.0)                                      # median of 40, 20, 50 days
    ninety = closed(deals, NOW, 90 * DAY)
    assert (ninety.won, ninety.won_amount, ninety.average_deal) == (4, D(170000), D(170000) / 3)
    assert ninety.cycle_days == 45.0  # median of 40, 20, 50, 160


def test_a_deal_won_the_day_it_was_created_has_a_cycle_of_zero():
    # Close dates are dates: a deal created at 15:00 and won that day closes at
    # midnight, 15 hours "before" it was created. It counts 0 days, not nothing.
    midnight = NOW - NOW % DAY - 3 * DAY
    same_day = Deal("s", WON, D("1000"), midnight + 15 * HOUR, midnight, None)
    assert closed([same_day], NOW, 30 * DAY).cycle_days == 0.0
    deals = [same_day, deal(WON, "1000", 8, 4), deal(WON, "1000", 40, 20)]  # 4 and 20 days
    # The median of 0, 4 and 20; leaving the same-day deal out would have said 12.
    assert closed(deals, NOW, 30 * DAY).cycle_days == 4.0


def test_no_closed_deals_has_no_rates():
    assert closed([deal(QUALIFIED, "1", 1)], NOW, 30 * DAY) == Closed(0, 0, D(0), None, None, None)


def test_funnel_counts_and_conversions():
    t = lambda days: NOW - days * DAY  # noqa: E731
    leads = [
        Lead("a", t(3), mql=t(2), sql=t(1), opportunity=t(1)),
        Lead("b", t(10), mql=t(9), sql=t(5)),
        Lead("c", t(12), mql=t(11)),
        Lead("d", t(20), mql=t(19)),
        Lead("e", t(40), mql=t(35), sql=t(20)),  # created and MQL before the window, SQL in it
        Lead("f", t(1)),
    ]
    result = funnel(leads, NOW, 30 * DAY)
    assert (result.leads, result.mqls, result.sqls, result.opportunities) == (5, 4, 3, 1)
    assert result.mql_to_sql == 0.75 and result.sql_to_opportunity == pytest.approx(1 / 3)
    empty = funnel([], NOW, 30 * DAY)
    assert (empty.mql_to_sql, empty.sql_to_opportunity) == (None, None)


def test_lead_response_time_and_share_within_two_hours():
    t = NOW - 5 * DAY
    leads = [
        Lead("a", t, first_touch=t + 30 * 60),      # 0.5 h
        Lead("b", t, first_touch=t + 90 * 60),      # 1.5 h
        Lead("c", t, first_touch=t + 3 * HOUR),     # 3 h: late
        Lead("d", t, first_touch=t + 2 * HOUR),     # exactly 2 h: within
        Lead("e", t),                               # never touched, 5 days waiting: late
        Lead("f", NOW - 60 * 60),                   # an hour old, untouched: not yet judged
        Lead("g", NOW - 40 * DAY, first_touch=NOW - 40 * DAY + 60),  # outside the window
    ]
    result = response(leads, NOW, 30 * DAY)
    assert result.median_hours == 1.75  # median of 0.5, 1.5, 2, 3
    assert result.within_target == 0.6  # a, b, d of a, b, c, d, e
    assert result.measured == 5
    assert response([], NOW, 30 * DAY).median_hours is None


def test_stalled_deals_have_not_changed_stage_for_14_days():
    deals = [deal(PROPOSAL, "1000", 30, changed_days_ago=15),
             deal(PROPOSAL, "2000", 30, changed_days_ago=13),
             deal(QUALIFIED, "4000", 20),                      # never moved since creation
             deal(QUALIFIED, None, 16, changed_days_ago=None),  # no amount, stalled
             deal(LOST, "8000", 60, 30, changed_days_ago=30)]  # closed: not stalled
    assert stalled(deals, NOW) == (3, D(5000))


def test_stage_changes_count_deals_that_entered_their_stage_in_14_days():
    deals = [deal(PROPOSAL, "1000", 30, changed_days_ago=13),   # moved: counts
             deal(PROPOSAL, "1000", 30, changed_days_ago=14),   # exactly 14 days: outside
             deal(QUALIFIED, "1000", 3),                        # created, never moved: counts
             deal(QUALIFIED, "1000", 20),                       # created 20 days ago: no
             deal(WON, "1000", 60, 2, changed_days_ago=2),      # closed 2 days ago: counts
             deal(LOST, "1000", 60, 30, changed_days_ago=30)]   # closed long ago: no
    assert stage_changes(deals, NOW) == 3
    assert stage_changes(deals[1:2] + deals[3:4], NOW) == 0  # the stagnation alert's case


def test_stage_labels_are_capped_by_open_amount():
    pipeline = {("Sales", "A"): (D(100), D(10), 1), ("Sales", "B"): (D(300), D(30), 2),
                ("Sales", "C"): (D(50), D(5), 1), ("Renewals", "A"): (D(100), D(50), 4)}
    assert capped_stages(pipeline, 2) == {
        ("Sales", "B"): (D(300), D(30), 2),
        ("Renewals", "A"): (D(100), D(50), 4),  # ties by name: Renewals before Sales
        (OTHER, OTHER): (D(150), D(15), 2)}
    assert capped_stages(pipeline, 10) == pipeline


def test_a_lead_moved_since_a_moment_if_created_or_staged_after_it():
    since = NOW - 30 * DAY
    assert lead_moved_since(Lead("a", NOW - DAY), since)                     # new
    assert lead_moved_since(Lead("b", NOW - 60 * DAY, sql=NOW - DAY), since)  # old, qualified now
    assert not lead_moved_since(Lead("c", NOW - 60 * DAY, mql=NOW - 40 * DAY,
                                     first_touch=NOW - DAY), since)  # a touch is no stage
    assert not lead_moved_since(Lead("d", since), since)                     # exactly on it: out
