"""Email KPI math on hand-computed numbers (exporter/sources/mailgun/kpis.py)."""

import pytest

from exporter.sources.mailgun.kpis import OTHER, Counts, cap_domains, cap_sizes, kept_domains, rates


def test_rates_of_a_domain():
    # 1,000 accepted: 970 delivered, 25 failed for good (18 hard bounces, 3 soft
    # bounces out of retries, 4 suppressed), 5 still retrying; of the delivered,
    # 300 opened (240 unique), 60 clicked (45 unique), 4 unsubscribed, 2 complained.
    counts = Counts(accepted=1000, delivered=970, failed_permanent=25, bounced_hard=18,
                    bounced_soft=3, suppressed=4,
                    failed_temporary=5, opened=300, opened_unique=240, clicked=60,
                    clicked_unique=45, unsubscribed=4, complained=2)
    assert rates(counts) == pytest.approx({
        "delivery_rate": 0.97,             # 970 / 1000
        "hard_bounce_rate": 0.018,         # 18 / 1000: hard bounces only
        "complaint_rate": 2 / 970,         # 0.00206..., over delivered
        "open_rate": 240 / 970,            # unique opens over delivered
        "click_rate": 45 / 970,
        "unsubscribe_rate": 4 / 970,
    })


def test_a_window_without_mail_has_no_rates_not_zero():
    assert rates(Counts()) == {}


def test_accepted_but_nothing_delivered_yet_has_only_the_accepted_based_rates():
    counts = Counts(accepted=10, failed_temporary=10)
    assert rates(counts) == {"delivery_rate": 0.0, "hard_bounce_rate": 0.0}


def test_counts_add_up_field_by_field():
    total = Counts(accepted=3, delivered=2, complained=1, bounced_soft=1) + \
        Counts(accepted=5, bounced_hard=4)
    assert total == Counts(accepted=8, delivered=2, bounced_hard=4, bounced_soft=1, complained=1)


def test_the_largest_domains_are_kept_and_the_rest_summed_under_other():
    volume = {"a.example": 50, "b.example": 500, "c.example": 50, "d.example": 10}
    kept = kept_domains(volume, 2)
    assert kept == ["b.example", "a.example"]  # a before c: a tie goes by name
    by_domain = {d: Counts(accepted=v, delivered=v - 1) for d, v in volume.items()}
    capped = cap_domains(by_domain, kept)
    assert capped == {"b.example": Counts(accepted=500, delivered=499),
                      "a.example": Counts(accepted=50, delivered=49),
                      OTHER: Counts(accepted=60, delivered=58)}
    assert rates(capped[OTHER])["delivery_rate"] == pytest.approx(58 / 60)


def test_under_the_cap_nothing_is_summed_and_a_quiet_kept_domain_has_zero_counts():
    kept = kept_domains({"a.example": 0, "b.example": 7}, 5)
    assert kept == ["b.example", "a.example"]
    assert cap_domains({"b.example": Counts(accepted=7)}, kept) == {
        "b.example": Counts(accepted=7), "a.example": Counts()}


def test_suppression_sizes_are_capped_like_the_counts():
    sizes = {"a.example": {"bounces": 5, "complaints": 1, "unsubscribes": 9},
             "b.example": {"bounces": 2, "complaints": 0, "unsubscribes": 3},
             "c.example": {"bounces": 1, "complaints": 4, "unsubscribes": 0}}
    assert cap_sizes(sizes, ["a.example"]) == {
        "a.example": {"bounces": 5, "complaints": 1, "unsubscribes": 9},
        OTHER: {"bounces": 3, "complaints": 4, "unsubscribes": 3}}
