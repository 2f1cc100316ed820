"""Support KPI math on hand-computed tickets and ratings (exporter/sources/helpdesk/)."""

import pytest

from exporter.sources.helpdesk import export
from exporter.sources.helpdesk.export import HelpdeskData, HelpdeskOptions
from exporter.sources.helpdesk.tickets import (
    DAY, HOUR, SLA_TARGETS, Rating, Ticket, backlog, backlog_growth, created, csat,
    first_reply_times, in_window, quantile, resolution_times, satisfied_by_score, sla_breaches,
    solved, volume_change, volume_vs_normal, within_sla,
)

NOW = 1_800_000_000


def ticket(id, priority, created_ago, status="closed", reply_after=None, solved_ago=None):
    """A ticket created `created_ago` seconds before NOW; first replied `reply_after`
    seconds after creation; solved `solved_ago` seconds before NOW (calendar times)."""
    opened = NOW - created_ago
    solved_at = None if solved_ago is None else NOW - solved_ago
    return Ticket(id, status, priority, opened, solved=solved_at,
                  first_reply=None if reply_after is None else opened + reply_after,
                  first_reply_seconds=reply_after,
                  resolution_seconds=None if solved_at is None else solved_at - opened)


# The desk every test below computes by hand.
TICKETS = [
    ticket("t1", "urgent", 5 * HOUR, "solved", reply_after=HOUR, solved_ago=2 * HOUR),      # 3h
    ticket("t2", "urgent", 10 * HOUR, "solved", reply_after=HOUR // 2, solved_ago=3 * HOUR),  # 7h
    ticket("t3", "high", 2 * HOUR, "new"),                                 # 2h old: inside 4h
    ticket("t4", "high", 6 * HOUR, "open", reply_after=HOUR),              # 6h old: breach
    ticket("t5", "normal", 3 * DAY, reply_after=2 * HOUR, solved_ago=2 * DAY),  # exactly 24h
    ticket("t6", "normal", 20 * DAY, reply_after=600, solved_ago=20 * DAY - 90000),  # 25h
    ticket("t7", "low", 40 * DAY, "pending"),                              # 40 days unsolved
    ticket("t8", "normal", HOUR, "new"),
]
RATINGS = [Rating("r1", NOW - HOUR, True), Rating("r2", NOW - 2 * DAY, False),
           Rating("r3", NOW - 10 * DAY, True), Rating("r4", NOW - 31 * DAY, True)]


def test_quantile_interpolates_between_closest_ranks():
    assert quantile([40, 10, 30, 20], 0.5) == 25      # the mean of the middle two
    assert quantile([10, 20, 30, 40], 0.9) == pytest.approx(37)  # rank 2.7: 30 + 0.7 x 10
    assert quantile([10, 20, 30], 0.5) == 20
    assert quantile([7], 0.9) == 7
    assert quantile([], 0.5) is None


def test_a_window_is_open_at_its_start_and_closed_at_now():
    assert in_window(NOW, NOW, DAY) and in_window(NOW - DAY + 1, NOW, DAY)
    assert not in_window(NOW - DAY, NOW, DAY)
    assert not in_window(NOW + 1, NOW, DAY) and not in_window(None, NOW, DAY)


def test_backlog_is_unsolved_tickets_by_status_and_priority():
    assert backlog(TICKETS) == {("new", "high"): 1, ("open", "high"): 1, ("pending", "low"): 1,
                                ("new", "normal"): 1}


def test_sla_breaches_are_unsolved_tickets_older_than_their_target():
    assert sla_breaches(TICKETS, NOW, SLA_TARGETS) == {"urgent": 0, "high": 1, "normal": 0,
                                                       "low": 1}
    # exactly at the target is not yet a breach
    at_target = [ticket("x", "urgent", 4 * HOUR, "open")]
    assert sla_breaches(at_target, NOW, SLA_TARGETS)["urgent"] == 0


def test_created_and_solved_per_window():
    assert [created(TICKETS, NOW, s) for s in (DAY, 7 * DAY, 30 * DAY)] == [5, 6, 7]
    assert [solved(TICKETS, NOW, s) for s in (DAY, 7 * DAY, 30 * DAY)] == [2, 3, 4]


def test_first_reply_times_are_of_tickets_first_replied_to_in_the_window():
    assert first_reply_times(TICKETS, NOW, DAY) == {"urgent": [3600, 1800], "high": [3600]}
    month = first_reply_times(TICKETS, NOW, 30 * DAY)
    assert sorted(month["normal"]) == [600, 7200]
    assert quantile(month["normal"], 0.5) == 3900
    assert quantile(month["normal"], 0.9) == pytest.approx(6540)   # 600 + 0.9 x 6600


def test_resolution_times_and_share_within_sla():
    day = resolution_times(TICKETS, NOW, DAY)
    assert day == {"urgent": [3 * HOUR, 7 * HOUR]}
    assert quantile(day["urgent"], 0.5) == 5 * HOUR
    assert quantile(day["urgent"], 0.9) == pytest.approx(23760)    # 10800 + 0.9 x 14400
    assert within_sla(day, SLA_TARGETS) == {"urgent": 0.5}         # 7h breaks the 4h target
    week = resolution_times(TICKETS, NOW, 7 * DAY)
    assert within_sla(week, SLA_TARGETS) == {"urgent": 0.5, "normal": 1.0}  # 24h is within
    month = resolution_times(TICKETS, NOW, 30 * DAY)
    assert sorted(month["normal"]) == [86400, 90000]
    assert within_sla(month, SLA_TARGETS)["normal"] == 0.5          # 25h is not
    assert within_sla(month, {**SLA_TARGETS, "normal": 25 * HOUR})["normal"] == 1.0


def test_csat_is_satisfied_over_rated_in_the_window():
    assert (csat(RATINGS, NOW, DAY).satisfied, csat(RATINGS, NOW, DAY).rated) == (1, 1)
    assert csat(RATINGS, NOW, 7 * DAY).share == 0.5
    assert csat(RATINGS, NOW, 30 * DAY).share == pytest.approx(2 / 3)  # r4 is 31 days old
    assert csat([], NOW, DAY).share is None


@pytest.mark.parametrize("score, satisfied", [(1, False), (2, False), (3, False), (4, True),
                                              (5, True)])
def test_intercom_scores_four_and_five_are_satisfied(score, satisfied):
    assert satisfied_by_score(score) is satisfied


@pytest.mark.parametrize("score", [0, 6])
def test_a_score_outside_one_to_five_is_an_error(score):
    with pytest.raises(ValueError):
        satisfied_by_score(score)


def test_volume_against_normal_and_week_over_week():
    # 5 tickets today; t5 and t6 in the 28 days before: 2/28 a day -> 5 / (2/28) = 70
    assert volume_vs_normal(TICKETS, NOW) == pytest.approx(70)
    assert volume_change(TICKETS, NOW) is None              # nothing in the week before
    weeks = [ticket(f"w{i}", "normal", 8 * DAY + i * HOUR) for i in range(4)] + \
        [ticket(f"n{i}", "normal", DAY + i * HOUR) for i in range(6)]
    assert volume_change(weeks, NOW) == pytest.approx(0.5)  # 6 this week / 4 the week before - 1
    assert volume_vs_normal([ticket("new", "low", HOUR)], NOW) is None  # no normal to compare


def test_backlog_growth_is_the_share_of_the_weeks_tickets_left_over():
    assert backlog_growth(TICKETS, NOW) == 0.5    # 6 created, 3 solved in 7 days: (6 - 3) / 6
    assert backlog_growth([], NOW) is None


def test_samples_leave_out_empty_windows_and_label_every_series():
    found = {(s.kpi, tuple(sorted(s.labels.items()))): s.value
             for s in export.samples("zendesk", HelpdeskData(TICKETS, RATINGS), NOW)}

    def value(metric, **labels):
        return found.get((metric, tuple(sorted({"source": "zendesk", **labels}.items()))))

    assert value("support_open_tickets", status="pending", priority="low") == 1
    assert value("support_sla_breaches", priority="urgent") == 0
    assert value("support_tickets_created", window="7d") == 6
    assert value("support_resolution", priority="urgent", window="24h",
                 percentile="90") == pytest.approx(23760)
    assert value("support_first_reply", priority="normal", window="30d",
                 percentile="50") == 3900
    assert value("support_resolution_within_sla", priority="normal", window="30d") == 0.5
    assert value("support_csat", window="7d") == 0.5
    assert value("support_ratings", window="30d") == 3
    assert value("support_ticket_volume_vs_normal", window="24h") == pytest.approx(70)
    assert value("support_backlog_growth", window="7d") == 0.5
    # no series where there is nothing to rank or divide
    assert value("support_resolution", priority="low", window="30d",
                 percentile="50") is None
    assert ("support_ticket_volume_change", (("source", "zendesk"), ("window", "7d"))) \
        not in found
    quiet = export.samples("zendesk", HelpdeskData([], []), NOW)
    assert {s.kpi for s in quiet} == {"support_sla_breaches", "support_tickets_created",
                                         "support_tickets_solved", "support_ratings"}


def test_samples_use_the_configured_targets():
    options = HelpdeskOptions(sla_targets={**SLA_TARGETS, "high": 8 * HOUR})
    breaches = {s.labels["priority"]: s.value
                for s in export.samples("intercom", HelpdeskData(TICKETS, []), NOW, options)
                if s.kpi == "support_sla_breaches"}
    assert breaches == {"urgent": 0, "high": 0, "normal": 0, "low": 1}   # t4 is 6h old < 8h


def test_keep_drops_only_tickets_solved_and_created_before_the_lookback():
    old = NOW - export.LOOKBACK - 1
    assert export.keep(Ticket("a", "pending", "low", old), NOW)                 # unsolved
    assert export.keep(Ticket("b", "solved", "low", old, solved=NOW - DAY), NOW)
    assert not export.keep(Ticket("c", "closed", "low", old, solved=old + 1), NOW)


def test_a_ticket_as_it_stood_at_a_past_moment():
    from exporter.sources.helpdesk.export import as_of

    ticket = Ticket("1", "solved", "high", created=100, solved=300, first_reply=150,
                    first_reply_seconds=50, resolution_seconds=200)
    assert as_of(ticket, 99) is None                      # not created yet
    assert as_of(ticket, 100) == Ticket("1", "solved", "high", created=100)
    assert as_of(ticket, 150) == Ticket("1", "solved", "high", created=100, first_reply=150,
                                        first_reply_seconds=50)
    assert as_of(ticket, 299).solved is None and as_of(ticket, 300) == ticket
