"""The fake Zendesk and fake Intercom over real sockets: their own behaviour, and the
real sources polling them, checked against the simulated desk's own records."""

from __future__ import annotations

import time

import requests

from exporter.secrets import Secret
from exporter.simulator.intercom_fake import FakeIntercom
from exporter.simulator.support_company import BUSINESS_SHARE, generate_support
from exporter.simulator.zendesk_fake import EXPORT_PATH, FakeZendesk
from exporter.sources.helpdesk import export
from exporter.sources.intercom import IntercomConfig, IntercomSource
from exporter.sources.zendesk import ZendeskConfig, ZendeskSource

NOW = int(time.time()) // 60 * 60
HOUR = 3600


def expected(desk, now, intercom=False):
    """{id: (status, priority, created, solved, first reply, reply time)} from the desk itself."""
    result = {}
    for view in desk.at(now):
        priority = view.ticket.priority
        status = view.status
        if intercom:
            priority = "high" if priority in ("urgent", "high") else "normal"
            status = {"new": "open", "pending": "snoozed", "hold": "snoozed",
                      "solved": "closed"}.get(status, status)
        if view.solved is None or view.solved > now - export.LOOKBACK or \
                view.ticket.created > now - export.LOOKBACK:
            reply = None if view.first_reply is None else view.first_reply - view.ticket.created
            result[str(view.id)] = (status, priority, view.ticket.created, view.solved, reply)
    return result


def records(tickets):
    return {t.id: (t.status, t.priority, t.created, t.solved, t.first_reply_seconds)
            for t in tickets}


def test_zendesk_source_against_the_fake_then_changes_as_time_passes():
    desk = generate_support(3, NOW)
    clock = [NOW]
    with FakeZendesk(desk, clock=lambda: clock[0], export_limit=None) as fake:
        config = ZendeskConfig(base_url=fake.url, email=fake.email,
                               api_token=Secret(fake.api_token), export_rate_limit=6000)
        zendesk = ZendeskSource(config, clock=lambda: clock[0])
        data = zendesk.read(NOW)
        want = expected(desk, NOW)
        # Zendesk reports whole minutes: reply times are rounded to the minute.
        want = {k: v[:4] + (None if v[4] is None else round(v[4] / 60) * 60,)
                for k, v in want.items()}
        assert records(data.tickets) == want
        assert len(data.ratings) == sum(1 for v in desk.at(NOW) if v.rating is not None
                                        and v.rated > NOW - export.LOOKBACK)
        deleted = {str(t.id) for t in desk.deleted_at(NOW)}
        assert deleted and not deleted & set(want)

        # Six hours on: only the changes are exported, from the kept cursor.
        fake.reset_log()
        clock[0] = NOW + 6 * HOUR
        later = zendesk.read(clock[0])
        exports = [q for _, path, q in fake.requests if path == EXPORT_PATH]
        assert len(exports) == 1 and "cursor" in exports[0]
        assert set(records(later.tickets)) == set(expected(desk, clock[0]))


def test_zendesk_fake_pages_to_end_of_stream_and_limits_exports():
    desk = generate_support(3, NOW)
    with FakeZendesk(desk, clock=lambda: NOW, export_limit=2) as fake:
        auth = requests.auth.HTTPBasicAuth(f"{fake.email}/token", fake.api_token)
        url = fake.url + EXPORT_PATH
        first = requests.get(url, params={"start_time": 0, "per_page": 100,
                                          "include": "metric_sets"}, auth=auth).json()
        assert len(first["tickets"]) == 100 and first["end_of_stream"] is False
        unsolved = [m for m in first["metric_sets"] if m["solved_at"] is None]
        assert all(m["full_resolution_time_in_minutes"] == {"calendar": None, "business": None}
                   for m in unsolved)
        solved = next(m for m in first["metric_sets"] if m["solved_at"])
        calendar = solved["full_resolution_time_in_minutes"]["calendar"]
        assert solved["full_resolution_time_in_minutes"]["business"] == \
            round(calendar * BUSINESS_SHARE)
        rest = requests.get(url, params={"cursor": first["after_cursor"], "per_page": 1000},
                            auth=auth).json()
        assert rest["end_of_stream"] is True
        ids = [t["id"] for t in first["tickets"] + rest["tickets"]]
        assert len(ids) == len(set(ids)) == len(desk.at(NOW)) + len(desk.deleted_at(NOW))
        assert sum(t["status"] == "deleted" for t in rest["tickets"] + first["tickets"]) == \
            len(desk.deleted_at(NOW))
        limited = requests.get(url, params={"cursor": rest["after_cursor"]}, auth=auth)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        wrong = requests.get(url, params={"start_time": 0},
                             auth=requests.auth.HTTPBasicAuth("x/token", "nope"))
        assert wrong.status_code == 401


def test_intercom_source_against_the_fake():
    desk = generate_support(4, NOW)
    with FakeIntercom(desk, clock=lambda: NOW) as fake:
        config = IntercomConfig(access_token=Secret(fake.access_token), base_url=fake.url)
        data = IntercomSource(config, clock=lambda: NOW).read(NOW)
        got, want = records(data.tickets), expected(desk, NOW, intercom=True)
        # also kept: conversations solved before the lookback but rated in it
        rated_only = {str(v.id) for v in desk.at(NOW) if v.rating is not None
                      and v.rated > NOW - export.LOOKBACK} - set(want)
        assert {k: v for k, v in got.items() if k not in rated_only} == want
        assert set(got) - set(want) == rated_only
        # every rating given in the lookback, also on a conversation solved before it
        assert {r.id for r in data.ratings} == {
            str(v.id) for v in desk.at(NOW) if v.rating is not None
            and v.rated > NOW - export.LOOKBACK}
        assert set(fake.versions_seen) == {"2.16"}


def test_intercom_fake_checks_token_version_and_query():
    with FakeIntercom(generate_support(4, NOW), clock=lambda: NOW) as fake:
        url = fake.url + "/conversations/search"
        good = {"Authorization": f"Bearer {fake.access_token}", "Intercom-Version": "2.16"}
        query = {"query": {"operator": "AND", "value": [
            {"field": "state", "operator": "=", "value": "open"},
            {"field": "created_at", "operator": ">", "value": NOW - 2 * HOUR}]},
            "pagination": {"per_page": 5}}
        found = requests.post(url, json=query, headers=good).json()
        assert all(c["state"] == "open" and c["created_at"] > NOW - 2 * HOUR
                   for c in found["conversations"])
        assert requests.post(url, json=query, headers={**good, "Intercom-Version": "1.0"}
                             ).status_code == 400
        assert requests.post(url, json=query, headers={**good, "Authorization": "Bearer x"}
                             ).status_code == 401
        fake.rate_limit(1)
        requests.post(url, json=query, headers=good)
        limited = requests.post(url, json=query, headers=good)
        assert limited.status_code == 429 and limited.headers["X-RateLimit-Remaining"] == "0"


def test_intercom_backfilled_steps_equal_what_a_poll_at_each_step_would_have_seen():
    from exporter.backfill import steps

    now = 1_800_000_000
    desk = generate_support(4, now)
    clock = [now]
    moments = steps(now, 20, 86400)
    with FakeIntercom(desk, clock=lambda: clock[0]) as fake:
        config = IntercomConfig(access_token=Secret(fake.access_token), base_url=fake.url)
        backfilled = dict(IntercomSource(config, clock=lambda: now).backfill(moments))
        for at in (moments[0], moments[9], moments[-2], now):
            clock[0] = at
            live = IntercomSource(config, clock=lambda: at).poll()
            want = sorted((s.kpi, sorted(s.labels.items()), s.value) for s in live
                          if at == now or s.kpi != "support_open_tickets")
            got = sorted((s.kpi, sorted(s.labels.items()), s.value) for s in backfilled[at])
            assert got == want, at
            assert any(kpi == "support_tickets_solved" and value for kpi, _, value in got)
