"""The Mailgun adapter: the real HTTP client against `responses` mocks in Mailgun's
response shapes, and against the fake Mailgun over real sockets."""

from __future__ import annotations

import base64
import json

import pytest
import responses

from exporter.config import from_mapping
from exporter.http import UpstreamError
from exporter.secrets import Secret
from exporter.simulator.mailgun_fake import FakeMailgun, MailgunAccount
from exporter.sources.base import UpstreamDataError
from exporter.sources.mailgun import MailgunConfig, MailgunSource
from exporter.sources.mailgun import fetch
from exporter.sources.mailgun.kpis import OTHER, Counts
from exporter.sources.mailgun.source import make_client

KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
US, EU = "https://api.mailgun.net", "https://api.eu.mailgun.net"
NOW = 1_800_000_000  # Fri, 15 Jan 2027 08:00:00 +0000


def item(domain: str, **metrics) -> dict:
    """One entry of a Metrics API answer, as Mailgun sends it."""
    return {"dimensions": [{"dimension": "domain", "value": domain, "display_value": domain}],
            "metrics": metrics}


def answer(items: list, total: int | None = None, skip: int = 0, limit: int = 300) -> dict:
    return {"start": "Thu, 14 Jan 2027 08:00:00 +0000", "end": "Fri, 15 Jan 2027 08:00:00 +0000",
            "resolution": "hour", "duration": "", "dimensions": ["domain"],
            "pagination": {"sort": "domain:asc", "skip": skip, "limit": limit,
                           "total": len(items) if total is None else total},
            "items": items, "aggregates": {"metrics": {}}}


def source(base_url: str = US, **options) -> MailgunSource:
    config = MailgunConfig(api_key=Secret(KEY), base_url=base_url, rate_limit=1000, **options)
    return MailgunSource(config, clock=lambda: NOW,
                         client=make_client(config, sleep=lambda _: None, max_retries=2))


def parse(section: dict):
    return from_mapping({"sources": {"mailgun": section}}, "kpi.yml").sources["mailgun"]


# --- config ---------------------------------------------------------------------------


def test_region_picks_the_api_host_and_base_url_overrides_it():
    assert parse({"api_key": KEY}).base_url == US
    assert parse({"api_key": KEY, "region": "eu"}).base_url == EU
    assert parse({"api_key": KEY, "region": "eu", "base_url": "http://127.0.0.1:9/"}).base_url \
        == "http://127.0.0.1:9"
    config = parse({"api_key": KEY, "domains": ["MG.example.com "], "max_domains": 5,
                    "suppressions_interval": "2h"})
    assert (config.domains, config.max_domains, config.suppressions_interval) == \
        (("mg.example.com",), 5, 7200)


# --- the Metrics API ------------------------------------------------------------------


# 25 permanent failures: 15 hard bounces, 3 soft bounces out of retries, 7 suppressed.
RECORDED = dict(accepted_outgoing_count=1000, delivered_count=970, permanent_failed_count=25,
                hard_bounces_count=15, soft_bounces_count=3, suppressed_bounces_count=4,
                suppressed_complaints_count=1,
                suppressed_unsubscribed_count=2, temporary_failed_count=5, opened_count=300,
                unique_opened_count=240, clicked_count=60, unique_clicked_count=45,
                unsubscribed_count=4, complained_count=2)


def answer_with(metrics_of: dict[str, dict]):
    """A responses callback: each domain's metrics, only those the query asked for."""
    def reply(request):
        asked = json.loads(request.body)["metrics"]
        items = [item(domain, **{m: v for m, v in values.items() if m in asked})
                 for domain, values in metrics_of.items()]
        return 200, {}, json.dumps(answer(items))
    return reply


@responses.activate
def test_counts_come_from_metrics_queries_of_ten_metrics_with_basic_auth():
    responses.add_callback(responses.POST, f"{US}/v1/analytics/metrics",
                           callback=answer_with({"mg.example.com": RECORDED}))
    counts = fetch.event_counts(make_client(MailgunConfig(api_key=Secret(KEY))),
                                NOW - 86400, NOW)
    assert counts == {"mg.example.com": Counts(
        accepted=1000, delivered=970, failed_permanent=25, bounced_hard=15, bounced_soft=3,
        suppressed=7, failed_temporary=5, opened=300, opened_unique=240, clicked=60,
        clicked_unique=45, unsubscribed=4, complained=2)}
    assert len(responses.calls) == 2  # 15 metrics, at most 10 a query
    asked = []
    for call in responses.calls:
        assert call.request.headers["Authorization"] == \
            "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
        body = json.loads(call.request.body)
        assert body["start"] == "Thu, 14 Jan 2027 08:00:00 +0000"
        assert body["end"] == "Fri, 15 Jan 2027 08:00:00 +0000"
        assert body["dimensions"] == ["domain"] and "filter" not in body
        assert len(body["metrics"]) <= 10
        asked += body["metrics"]
    assert sorted(asked) == sorted(RECORDED)
    # The permanent failures and their parts come from one answer.
    assert {"permanent_failed_count", "hard_bounces_count", "soft_bounces_count",
            "suppressed_bounces_count", "suppressed_complaints_count",
            "suppressed_unsubscribed_count"} <= set(json.loads(responses.calls[0].request.body)
                                                    ["metrics"])


@responses.activate
def test_permanent_failures_that_are_not_their_parts_fail_the_poll():
    # 25 permanent failures, but 15 + 3 + 7 + 1 more hard bounce = 26: not what Mailgun defines.
    drifted = {**RECORDED, "hard_bounces_count": 16}
    responses.add_callback(responses.POST, f"{US}/v1/analytics/metrics",
                           callback=answer_with({"mg.example.com": drifted}))
    with pytest.raises(UpstreamDataError, match="mg.example.com: 25 permanent failures are not "
                                                "16 hard bounces"):
        fetch.event_counts(make_client(MailgunConfig(api_key=Secret(KEY))), NOW - 86400, NOW)


@responses.activate
def test_a_null_or_missing_count_is_zero_and_configured_domains_filter_the_query():
    responses.add_callback(responses.POST, f"{US}/v1/analytics/metrics", callback=answer_with(
        {"mg.example.com": {"accepted_outgoing_count": 3, "delivered_count": None}}))
    client = make_client(MailgunConfig(api_key=Secret(KEY)))
    counts = fetch.event_counts(client, NOW - 3600, NOW, ["mg.example.com", "b.example.com"])
    assert counts == {"mg.example.com": Counts(accepted=3)}
    body = json.loads(responses.calls[0].request.body)
    assert body["filter"] == {"AND": [{"attribute": "domain", "comparator": "=", "values": [
        {"label": "mg.example.com", "value": "mg.example.com"},
        {"label": "b.example.com", "value": "b.example.com"}]}]}


@responses.activate
def test_metrics_pages_follow_skip_until_a_short_page():
    domains = {f"d{i:04d}.example.com": {"accepted_outgoing_count": i} for i in range(1002)}

    def reply(request):
        body = json.loads(request.body)
        skip, limit = body["pagination"]["skip"], body["pagination"]["limit"]
        page = [item(d, **{m: v for m, v in values.items() if m in body["metrics"]})
                for d, values in list(domains.items())[skip:skip + limit]]
        return 200, {}, json.dumps(answer(page, total=len(domains), skip=skip, limit=limit))

    responses.add_callback(responses.POST, f"{US}/v1/analytics/metrics", callback=reply)
    counts = fetch.event_counts(make_client(MailgunConfig(api_key=Secret(KEY))), NOW - 60, NOW)
    assert len(counts) == 1002 and counts["d1001.example.com"] == Counts(accepted=1001)
    pages = [json.loads(c.request.body)["pagination"] for c in responses.calls]
    assert [(p["skip"], p["limit"]) for p in pages] == [(0, 1000), (1000, 1000)] * 2


@responses.activate
def test_metrics_paging_follows_the_total_when_mailgun_sends_less_than_asked():
    domains = [f"d{i}.example.com" for i in range(5)]

    def reply(request):  # serves 2 a page, whatever the limit asked
        skip = json.loads(request.body)["pagination"]["skip"]
        page = [item(d, accepted_outgoing_count=1) for d in domains[skip:skip + 2]]
        return 200, {}, json.dumps(answer(page, total=len(domains), skip=skip))

    responses.add_callback(responses.POST, f"{US}/v1/analytics/metrics", callback=reply)
    counts = fetch.event_counts(make_client(MailgunConfig(api_key=Secret(KEY))), NOW - 60, NOW)
    assert sorted(counts) == domains
    skips = [json.loads(c.request.body)["pagination"]["skip"] for c in responses.calls]
    assert skips == [0, 2, 4] * 2


@responses.activate
def test_an_empty_window_has_counts_but_no_rates_for_its_domains():
    """EU region, no mail at all: zero counts, no rate series."""
    responses.post(f"{EU}/v1/analytics/metrics", json={**answer([]), "items": None})
    responses.get(f"{EU}/v4/domains", json={"total_count": 1, "items": [
        {"name": "quiet.example.com", "state": "active"}]})
    for kind in fetch.SUPPRESSION_LISTS:
        responses.get(f"{EU}/v3/quiet.example.com/{kind}",
                      json={"items": [], "paging": {"next": f"{EU}/v3/quiet.example.com/{kind}"
                                                            "?page=next&address="}})
    samples = source(EU).poll()
    metrics = {s.kpi for s in samples}
    assert metrics == {"email_events", "email_suppressions"}  # no rate series at all
    assert all(s.value == 0 for s in samples)
    assert {s.labels["window"] for s in samples if s.kpi == "email_events"} == {"24h", "7d"}
    assert all(call.request.url.startswith(EU) for call in responses.calls)


BASIC = base64.b64encode(f"api:{KEY}".encode()).decode()


@pytest.mark.parametrize("body", [f"Forbidden: {KEY}",
                                  json.dumps({"message": f"Invalid private key {KEY} ({BASIC})"})])
@responses.activate
def test_a_bad_key_is_an_auth_error_that_names_no_secret(body):
    responses.post(f"{US}/v1/analytics/metrics", status=401, body=body)  # echoing the key
    with pytest.raises(UpstreamError) as caught:
        source().poll()
    assert caught.value.reason == "auth"
    assert KEY not in str(caught.value) and BASIC not in str(caught.value)
    assert len(responses.calls) == 1  # not retried


@responses.activate
def test_429_is_retried_when_mailgun_says_the_limit_resets():
    waits = []
    config = MailgunConfig(api_key=Secret(KEY), rate_limit=1000)
    client = make_client(config, sleep=waits.append)
    responses.post(f"{US}/v1/analytics/metrics", status=429, headers={"X-RateLimit-Reset": "3"},
                   json={"message": "Too many requests, try again after 3 seconds"})
    responses.post(f"{US}/v1/analytics/metrics", json=answer([]))
    responses.post(f"{US}/v1/analytics/metrics", json=answer([]))
    assert fetch.event_counts(client, NOW - 60, NOW) == {}
    assert waits == [3.0] and client.stats.snapshot()["errors"]["rate_limited"] == 1


@pytest.mark.parametrize("metrics", [{"delivered_count": "970"}, {"delivered_count": -1},
                                     {"delivered_count": True}])
@responses.activate
def test_a_count_that_is_not_a_count_marks_the_data_bad(metrics):
    responses.post(f"{US}/v1/analytics/metrics", json=answer([item("mg.example.com", **metrics)]))
    with pytest.raises(UpstreamDataError, match="delivered_count of mg.example.com"):
        fetch.event_counts(make_client(MailgunConfig(api_key=Secret(KEY))), NOW - 60, NOW)


@responses.activate
def test_suppression_pages_are_followed_on_our_own_host_until_an_empty_one():
    full = {"items": [{"address": f"a{i}@x.example"} for i in range(fetch.PAGE)],
            "paging": {"next": "https://elsewhere.example/v3/mg.example.com/bounces"
                               "?page=next&address=a999%40x.example&limit=1000"}}
    empty = {"items": [], "paging": {"next": f"{US}/v3/mg.example.com/bounces?page=next"}}
    responses.get(f"{US}/v3/mg.example.com/bounces", json=full)
    responses.get(f"{US}/v3/mg.example.com/bounces", json=empty)
    size = fetch.suppression_size(make_client(MailgunConfig(api_key=Secret(KEY))),
                                  "mg.example.com", "bounces")
    assert size == 1000
    second = responses.calls[1].request.url
    assert second.startswith(f"{US}/v3/mg.example.com/bounces?")  # our host, the link's query
    assert "page=next" in second and "address=a999%40x.example" in second


@responses.activate
def test_a_suppression_next_link_to_another_list_is_refused():
    responses.get(f"{US}/v3/mg.example.com/bounces", json={
        "items": [{"address": f"a{i}@x.example"} for i in range(fetch.PAGE)],
        "paging": {"next": f"{US}/v3/other.example/bounces?page=next"}})
    with pytest.raises(UpstreamDataError, match="next page is elsewhere"):
        fetch.suppression_size(make_client(MailgunConfig(api_key=Secret(KEY))),
                               "mg.example.com", "bounces")


# --- against the fake Mailgun over real sockets ---------------------------------------


def fake_source(fake: FakeMailgun, clock=lambda: NOW, **options) -> MailgunSource:
    config = MailgunConfig(api_key=Secret(fake.api_key), base_url=fake.url, rate_limit=1000,
                           **options)
    return MailgunSource(config, clock=clock)


def test_the_fake_account_end_to_end_with_a_silent_domain():
    with FakeMailgun(MailgunAccount(seed=1, now=NOW)) as fake:
        samples = fake_source(fake).poll()
    by = {(s.kpi, s.labels["domain"], s.labels.get("event") or s.labels.get("list"),
           s.labels.get("window")): s.value for s in samples}
    busy = by[("email_events", "mg.example.com", "accepted", "24h")]
    assert 15_000 < busy < 30_000
    delivered = by[("email_events", "mg.example.com", "delivered", "24h")]
    assert by[("email_delivery_rate", "mg.example.com", None, "24h")] == delivered / busy
    # soft bounces happen, and the three kinds of permanent failure add up
    events = {(domain, event): value for (kpi, domain, event, window), value in by.items()
              if kpi == "email_events" and window == "7d"}
    for domain in ("mg.example.com", "marketing.example.com", "news.example.com"):
        assert events[(domain, "bounced_soft")] > 0
        assert events[(domain, "bounced_hard")] + events[(domain, "bounced_soft")] \
            + events[(domain, "suppressed")] == events[(domain, "failed_permanent")]
    assert by[("email_hard_bounce_rate", "mg.example.com", None, "24h")] == \
        by[("email_events", "mg.example.com", "bounced_hard", "24h")] / busy
    # the silent domain: zero counts, no rates
    assert by[("email_events", "staging.example.com", "accepted", "7d")] == 0
    assert ("email_delivery_rate", "staging.example.com", None, "7d") not in by
    # suppression lists of 2,350 entries: three pages of up to 1,000
    assert by[("email_suppressions", "mg.example.com", "bounces", None)] == 2350


def test_suppression_lists_are_walked_page_by_page_and_only_every_interval():
    clock = {"now": NOW}
    with FakeMailgun(MailgunAccount(seed=1, now=NOW)) as fake:
        mailgun = fake_source(fake, clock=lambda: clock["now"], suppressions_interval=3600)
        mailgun.poll()
        bounce_pages = [q for _, p, q in fake.requests if p == "/v3/mg.example.com/bounces"]
        assert len(bounce_pages) == 3  # 1,000 + 1,000 + 350
        assert bounce_pages[1]["page"] == ["next"] and bounce_pages[1]["limit"] == ["1000"]
        fake.reset_log()
        clock["now"] += 600
        mailgun.poll()
        assert not [p for _, p, _ in fake.requests if "/v3/" in p]  # sizes reused
        clock["now"] += 3600
        mailgun.poll()
        assert [p for _, p, _ in fake.requests if "/v3/" in p]  # and fetched again


def test_the_domain_cap_keeps_the_busiest_and_sums_the_rest():
    with FakeMailgun(MailgunAccount(seed=1, now=NOW)) as fake:
        capped = fake_source(fake, max_domains=2).poll()
        full = fake_source(fake).poll()

    def events(samples, event, window="7d"):
        return {s.labels["domain"]: s.value for s in samples if s.kpi == "email_events"
                and s.labels["event"] == event and s.labels["window"] == window}

    assert set(events(capped, "accepted")) == {"mg.example.com", "marketing.example.com", OTHER}
    whole = events(full, "accepted")
    assert events(capped, "accepted")[OTHER] == whole["news.example.com"] + \
        whole["staging.example.com"]
    suppressions = {(s.labels["domain"], s.labels["list"]): s.value for s in capped
                    if s.kpi == "email_suppressions"}
    assert suppressions[(OTHER, "unsubscribes")] == 2210  # news + staging (0)


def test_the_fake_answers_a_wrong_key_with_401_forbidden():
    with FakeMailgun(MailgunAccount(seed=1, now=NOW), api_key="key-right") as fake:
        config = MailgunConfig(api_key=Secret("key-wrong"), base_url=fake.url)
        with pytest.raises(UpstreamError) as caught:
            MailgunSource(config).poll()
    assert caught.value.reason == "auth" and "key-wrong" not in str(caught.value)


# --- backfill ---------------------------------------------------------------------------

DAY = 86400


def test_each_backfilled_day_is_what_a_poll_then_would_have_said():
    """Ten midnights and now, against the fake over real sockets: every past step's
    counts and rates equal a poll at that moment (its suppression lists are today's
    only), from two daily queries for the whole span, not two per step."""
    from exporter.backfill import steps

    now = NOW
    moments = steps(now, 10, DAY)
    with FakeMailgun(MailgunAccount(seed=1, now=NOW)) as fake:
        backfilled = dict(fake_source(fake, max_domains=2).backfill(moments))
        queries = [body for body in fake.bodies if "metrics" in body]  # the POSTed queries
        for at in moments[:-1]:
            polled = fake_source(fake, clock=lambda at=at: at, max_domains=2).poll()
            expected = sorted((s.kpi, sorted(s.labels.items()), s.value) for s in polled
                              if s.kpi != "email_suppressions"
                              and s.labels["domain"] != "staging.example.com")
            assert sorted((s.kpi, sorted(s.labels.items()), s.value)
                          for s in backfilled[at]) == expected, at
    assert list(backfilled) == moments
    kept = {s.labels["domain"] for s in backfilled[moments[0]]}
    assert kept == {"mg.example.com", "marketing.example.com", OTHER}  # capped as a poll is
    assert any(s.kpi == "email_suppressions" for s in backfilled[now])  # the last step polls
    # the daily pair for the whole span, then the poll's two windows (two queries each)
    assert [q["dimensions"] for q in queries] == [["time", "domain"]] * 2 + [["domain"]] * 4


@responses.activate
def test_a_domain_is_backfilled_from_its_first_day_and_a_day_must_start_at_midnight():
    day0 = NOW // DAY * DAY - 10 * DAY

    def daily(domain: str, day: int, accepted: int) -> dict:
        when = fetch.rfc2822(day)
        return {"dimensions": [{"dimension": "time", "value": when, "display_value": when},
                               {"dimension": "domain", "value": domain, "display_value": domain}],
                "metrics": {"accepted_outgoing_count": accepted, "delivered_count": accepted}}

    items = [daily("old.example.com", day0 + k * DAY, 100) for k in range(10)]
    items += [daily("new.example.com", day0 + 8 * DAY, 40), daily("new.example.com", day0 + 9 * DAY, 60)]
    responses.post(US + "/v1/analytics/metrics", json=answer(items))
    responses.post(US + "/v1/analytics/metrics", json=answer([]))  # the engagement metrics
    counts = fetch.daily_event_counts(source().client, day0, day0 + 10 * DAY)
    assert counts[day0 + 9 * DAY]["new.example.com"].accepted == 60
    body = json.loads(responses.calls[0].request.body)
    assert body["dimensions"] == ["time", "domain"] and body["resolution"] == "day"

    from exporter.sources.mailgun.source import _window
    first = {"old.example.com": day0, "new.example.com": day0 + 8 * DAY}
    week = _window(counts, first, day0 + 3 * DAY, day0 + 10 * DAY)
    assert week == {"old.example.com": Counts(accepted=700, delivered=700)}  # new: not all of it
    last_day = _window(counts, first, day0 + 9 * DAY, day0 + 10 * DAY)
    assert last_day["new.example.com"] == Counts(accepted=60, delivered=60)
    quiet = _window({}, first, day0 + 9 * DAY, day0 + 10 * DAY)  # no events that day: zero
    assert quiet == {"old.example.com": Counts(), "new.example.com": Counts()}

    responses.replace(responses.POST, US + "/v1/analytics/metrics", json=answer(
        [dict(daily("old.example.com", day0, 1), dimensions=[
            {"dimension": "time", "value": "Mon, 04 Jan 2027 05:00:00 +0000"},
            {"dimension": "domain", "value": "old.example.com"}])]))
    with pytest.raises(UpstreamDataError, match="not at midnight UTC"):
        fetch.daily_event_counts(source().client, day0, day0 + 10 * DAY)
