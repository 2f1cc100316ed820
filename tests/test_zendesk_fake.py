"""The fake Zendesk over real sockets: its own behaviour (auth, the export's
pages, cursors, end_of_stream, deleted tickets, metric sets, the export limit
with its 429 and Retry-After, ratings), and the real ZendeskSource polling it,
whose records must equal what is worked out here from the desk itself."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from exporter.http import HttpClient, UpstreamError
from exporter.ratelimit import RateLimiter
from exporter.secrets import Secret
from exporter.simulator.support_company import BUSINESS_SHARE, generate_support
from exporter.simulator.zendesk_fake import EXPORT_PATH, RATINGS_PATH, FakeZendesk, iso
from exporter.sources.helpdesk.tickets import DAY, HOUR, Rating, Ticket
from exporter.sources.zendesk import ZendeskConfig, ZendeskSource, fetch

NOW = int(time.time()) // 60 * 60
LOOKBACK = 30 * DAY


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def desk():
    return generate_support(seed=5, now=NOW)


@pytest.fixture
def fake(desk):
    with FakeZendesk(desk, clock=lambda: NOW, export_limit=None) as server:
        yield server


def auth(fake, token=None):
    return requests.auth.HTTPBasicAuth(f"{fake.email}/token", token or fake.api_token)


def export(fake, **params):
    return requests.get(fake.url + EXPORT_PATH, params=params, auth=auth(fake))


def everything(fake, per_page=1000, **params):
    """Every page of an export from start_time=0, and the last page."""
    pages = [export(fake, start_time=0, per_page=per_page, **params).json()]
    while not pages[-1]["end_of_stream"]:
        pages.append(export(fake, cursor=pages[-1]["after_cursor"], per_page=per_page,
                            **params).json())
    return pages


def minutes(since, until):
    return None if until is None else round((until - since) / 60)


# -- auth and errors ------------------------------------------------------------

@pytest.mark.parametrize("credentials", [
    None,                                                           # no Authorization
    ("ops@example.com/token", "wrong-token"),
    ("someone@example.com/token", "zd-fake-token"),
    ("ops@example.com", "zd-fake-token"),                           # a password login
])
def test_anything_but_email_token_basic_auth_is_a_401(fake, credentials):
    answer = requests.get(fake.url + EXPORT_PATH, params={"start_time": 0},
                          auth=credentials and requests.auth.HTTPBasicAuth(*credentials))
    assert answer.status_code == 401
    assert answer.json() == {"error": "Couldn't authenticate you"}


def test_the_right_basic_auth_is_accepted_and_unknown_paths_are_zendesk_404s(fake):
    header = "Basic " + base64.b64encode(b"ops@example.com/token:zd-fake-token").decode()
    assert requests.get(fake.url + EXPORT_PATH, params={"start_time": 0},
                        headers={"Authorization": header}).status_code == 200
    missing = requests.get(fake.url + "/api/v2/views.json", auth=auth(fake))
    assert missing.status_code == 404 and missing.json()["error"] == "InvalidEndpoint"


@pytest.mark.parametrize("params", [{}, {"start_time": "yesterday"}, {"cursor": "%%%"},
                                    {"start_time": 0, "per_page": 0},
                                    {"start_time": 0, "per_page": 1001}])
def test_bad_export_parameters_are_400s_in_zendesks_shape(fake, params):
    answer = export(fake, **params)
    assert answer.status_code == 400
    assert answer.json()["error"] == "InvalidValue" and answer.json()["description"]


def test_injected_failures_answer_in_zendesks_shape(fake):
    fake.fail_next(status=503)
    answer = export(fake, start_time=0)
    assert answer.status_code == 503 and set(answer.json()) == {"error", "description"}
    assert export(fake, start_time=0).status_code == 200


# -- the export -----------------------------------------------------------------

def test_the_export_pages_every_ticket_once_by_last_change_to_end_of_stream(fake, desk):
    pages = everything(fake, per_page=50)
    views, deleted = desk.at(NOW), desk.deleted_at(NOW)
    total = len(views) + len(deleted)
    assert len(pages) == -(-total // 50)  # ceil: full pages, then the rest
    assert [p["end_of_stream"] for p in pages] == [False] * (len(pages) - 1) + [True]
    assert all(len(p["tickets"]) == 50 for p in pages[:-1])
    tickets = [t for p in pages for t in p["tickets"]]
    assert sorted(t["id"] for t in tickets) == sorted([v.id for v in views] +
                                                      [t.id for t in deleted])
    order = [(t["updated_at"], t["id"]) for t in tickets]
    assert order == sorted(order)  # ISO times in UTC sort as the moments do
    for p in pages:
        assert p["after_url"] == f"{fake.url}{EXPORT_PATH}?cursor={p['after_cursor']}"
        assert p["before_cursor"] is None


def test_tickets_and_metric_sets_in_zendesks_shape(desk):
    # A minute after a ticket arrives: the desk has a ticket of every kind then.
    at = min(t.created for t in desk.tickets if t.created > NOW) + 60
    with FakeZendesk(desk, clock=lambda: at, export_limit=None) as fake:
        pages = everything(fake, include="metric_sets")
        url = fake.url
    tickets = {t["id"]: t for p in pages for t in p["tickets"]}
    metric_sets = {m["ticket_id"]: m for p in pages for m in p["metric_sets"]}
    views = desk.at(at)
    assert set(metric_sets) == {v.id for v in views}  # deleted tickets have none
    for view in views:
        created = view.ticket.created
        assert tickets[view.id] == {
            "id": view.id, "url": f"{url}/api/v2/tickets/{view.id}.json",
            "subject": view.ticket.subject, "status": view.status,
            "priority": view.ticket.priority, "requester_email": view.ticket.requester,
            "created_at": iso(created), "updated_at": iso(view.updated)}
        metric = metric_sets[view.id]
        reply = minutes(created, view.first_reply)
        resolution = minutes(created, view.solved)
        # business minutes: a third of calendar minutes (BUSINESS_SHARE), rounded
        assert metric["reply_time_in_minutes"] == {
            "calendar": reply, "business": None if reply is None else round(reply / 3)}
        assert metric["full_resolution_time_in_minutes"] == {
            "calendar": resolution,
            "business": None if resolution is None else round(resolution / 3)}
        assert metric["solved_at"] == (None if view.solved is None else iso(view.solved))
    assert BUSINESS_SHARE == 1 / 3
    # nulls until things happen: new (no reply), waiting (no solve), solved and closed
    assert {"new", "solved", "closed"} <= {v.status for v in views}
    assert {"pending", "open", "hold"} & {v.status for v in views}
    new = next(v for v in views if v.status == "new")
    assert metric_sets[new.id]["reply_time_in_minutes"] == {"calendar": None, "business": None}


def test_without_include_there_are_no_metric_sets(fake):
    assert "metric_sets" not in export(fake, start_time=0).json()


def test_deleted_tickets_come_as_status_deleted_at_their_deletion(fake, desk):
    tickets = [t for p in everything(fake) for t in p["tickets"]]
    deleted = {t["id"]: t for t in tickets if t["status"] == "deleted"}
    assert deleted and set(deleted) == {t.id for t in desk.deleted_at(NOW)}
    for t in desk.deleted_at(NOW):
        assert deleted[t.id]["updated_at"] == iso(t.deleted)


def test_start_time_exports_what_changed_at_or_after_it(fake, desk):
    start = NOW - 2 * DAY
    tickets = [t for p in everything(fake) for t in p["tickets"]]  # from 0: for comparison
    since = export(fake, start_time=start).json()
    assert since["end_of_stream"] is True
    assert [t["id"] for t in since["tickets"]] == \
        [t["id"] for t in tickets if t["updated_at"] >= iso(start)]
    assert 0 < len(since["tickets"]) < len(tickets)


def test_a_cursor_at_the_end_gets_only_later_changes_as_the_desk_moves_on(desk):
    clock = Clock(NOW)
    with FakeZendesk(desk, clock=clock, export_limit=None) as fake:
        end = everything(fake)[-1]
        assert export(fake, cursor=end["after_cursor"]).json()["tickets"] == []
        clock.t = NOW + 6 * HOUR
        later = export(fake, cursor=end["after_cursor"]).json()
    before = {v.id: v.updated for v in desk.at(NOW)}
    changed = {v.id for v in desk.at(NOW + 6 * HOUR) if before.get(v.id) != v.updated}
    gone = {t.id for t in desk.deleted_at(NOW + 6 * HOUR) if t.deleted > NOW}
    assert changed  # new tickets, replies or solves happened in those hours
    assert {t["id"] for t in later["tickets"]} == changed | gone
    assert later["end_of_stream"] is True and later["after_cursor"] != end["after_cursor"]


def test_the_export_allows_10_requests_a_minute_then_429_with_retry_after(desk):
    minute = Clock(1000.0)
    with FakeZendesk(desk, clock=lambda: NOW, limit_clock=minute) as fake:
        for _ in range(10):
            assert export(fake, start_time=0).status_code == 200
        minute.t += 15
        limited = export(fake, start_time=0)
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "45"  # the first of the 10 leaves at 1060
        assert limited.json()["error"] == "APIRateLimitExceeded"
        # ratings are not export-limited
        assert requests.get(fake.url + RATINGS_PATH, auth=auth(fake)).status_code == 200
        minute.t += 45
        assert export(fake, start_time=0).status_code == 200


def test_the_http_client_waits_out_the_export_limit(desk):
    minute = Clock(0.0)
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        minute.t += seconds

    with FakeZendesk(desk, clock=lambda: NOW, export_limit=2, limit_clock=minute) as fake:
        header = "Basic " + base64.b64encode(
            f"{fake.email}/token:{fake.api_token}".encode()).decode()
        client = HttpClient("zendesk", fake.url, headers={"Authorization": header},
                            sleep=sleep, jitter=lambda: 0.0)
        for second in (0, 5, 10):
            minute.t = max(minute.t, second)
            client.get_json(EXPORT_PATH, {"start_time": 0})
    # the third request, at 10 s, was told to wait until the first leaves the minute
    assert slept == [50.0]
    assert client.stats.snapshot()["errors"]["rate_limited"] == 1


# -- ratings --------------------------------------------------------------------

def rated_views(desk, now, since):
    return sorted((v for v in desk.at(now) if v.rating is not None and v.rated >= since),
                  key=lambda v: (v.rated, v.id))


def test_ratings_page_with_cursors_and_score_good_for_4_and_5(fake, desk):
    since = NOW - LOOKBACK
    url, params = fake.url + RATINGS_PATH, {"score": "received", "start_time": since,
                                            "page[size]": 10}
    pages = [requests.get(url, params=params, auth=auth(fake)).json()]
    while pages[-1]["meta"]["has_more"]:
        pages.append(requests.get(pages[-1]["links"]["next"], auth=auth(fake)).json())
    want = rated_views(desk, NOW, since)
    assert len(want) > 20 and len(pages) == -(-len(want) // 10)
    assert pages[-1]["links"]["next"] is None
    got = [r for p in pages for r in p["satisfaction_ratings"]]
    assert [(r["ticket_id"], r["score"], r["updated_at"]) for r in got] == \
        [(v.id, "good" if v.rating >= 4 else "bad", iso(v.rated)) for v in want]
    assert {r["score"] for r in got} == {"good", "bad"}
    # the same pages through meta.after_cursor, as the source reads them
    second = requests.get(url, params={**params, "page[after]": pages[0]["meta"]["after_cursor"]},
                          auth=auth(fake)).json()
    assert second["satisfaction_ratings"] == pages[1]["satisfaction_ratings"]


def test_ratings_filter_on_score(fake, desk):
    bad = requests.get(fake.url + RATINGS_PATH, params={"score": "bad", "page[size]": 100},
                       auth=auth(fake)).json()["satisfaction_ratings"]
    assert {r["score"] for r in bad} == {"bad"}
    assert len(bad) == sum(1 for v in rated_views(desk, NOW, 0) if v.rating <= 3) > 0
    assert requests.get(fake.url + RATINGS_PATH, params={"score": "great"},
                        auth=auth(fake)).status_code == 400


# -- the real source against the fake --------------------------------------------

def expected_tickets(desk, now, business_hours=False):
    """The records the source must make, from the desk: unsolved tickets and those created or
    solved in the last 30 days; durations in the fake's whole minutes."""
    result = {}
    for view in desk.at(now):
        created, solved = view.ticket.created, view.solved
        if solved is not None and solved <= now - LOOKBACK and created <= now - LOOKBACK:
            continue
        reply, resolution = minutes(created, view.first_reply), minutes(created, solved)
        if business_hours:
            shown = [None if m is None else round(m * BUSINESS_SHARE) for m in (reply, resolution)]
        else:
            shown = [reply, resolution]
        result[str(view.id)] = Ticket(
            id=str(view.id), status=view.status, priority=view.ticket.priority, created=created,
            solved=solved, first_reply=None if reply is None else created + reply * 60,
            first_reply_seconds=None if shown[0] is None else shown[0] * 60,
            resolution_seconds=None if shown[1] is None else shown[1] * 60)
    return result


def expected_ratings(desk, now):
    return {Rating(str(v.id + 900_000), v.rated, v.rating >= 4)
            for v in rated_views(desk, now, now - LOOKBACK)}


def zendesk_source(fake, clock, **options):
    config = ZendeskConfig(base_url=fake.url, email=fake.email, api_token=Secret(fake.api_token),
                           **options)
    return ZendeskSource(config, clock=clock, export_limiter=RateLimiter(1000))


def test_the_source_reads_the_desk_then_follows_it_from_the_cursor(desk):
    clock = Clock(NOW)
    with FakeZendesk(desk, clock=clock, export_limit=None) as fake:
        zendesk = zendesk_source(fake, clock)
        data = zendesk.read(NOW)
        assert {t.id: t for t in data.tickets} == expected_tickets(desk, NOW)
        assert set(data.ratings) == expected_ratings(desk, NOW)
        # old tickets solved long ago were exported but are not kept
        assert len(data.tickets) < len(desk.at(NOW))

        for later in (NOW + 6 * HOUR, NOW + 3 * DAY):
            fake.reset_log()
            clock.t = later
            data = zendesk.read(later)
            assert {t.id: t for t in data.tickets} == expected_tickets(desk, later)
            assert set(data.ratings) == expected_ratings(desk, later)
            exports = [q for _, path, q in fake.requests if path == EXPORT_PATH]
            assert len(exports) == 1 and "cursor" in exports[0] and "start_time" not in exports[0]


def test_the_source_in_business_hours(desk, fake):
    data = zendesk_source(fake, lambda: NOW, business_hours=True).read(NOW)
    assert {t.id: t for t in data.tickets} == expected_tickets(desk, NOW, business_hours=True)


def test_the_source_pages_through_the_export_limit(desk, monkeypatch):
    monkeypatch.setattr(fetch, "EXPORT_PAGE", 20)  # many pages from a small desk
    minute = Clock(0.0)
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        minute.t += seconds

    with FakeZendesk(desk, clock=lambda: NOW, export_limit=3, limit_clock=minute) as fake:
        zendesk = zendesk_source(fake, lambda: NOW, rate_limit=1000)
        zendesk.client._sleep = sleep  # the client waits out each 429 on the fake's minute
        data = zendesk.read(NOW)
        exports = [q for _, path, q in fake.requests if path == EXPORT_PATH]
    # the tickets changed in the 30 days the first export reads, deleted ones included
    changed = sum(1 for view in desk.at(NOW) if view.updated >= NOW - 30 * 86400) + \
        sum(1 for t in desk.deleted_at(NOW) if t.deleted >= NOW - 30 * 86400)
    pages = -(-changed // 20)
    assert pages > 6
    assert {t.id: t for t in data.tickets} == expected_tickets(desk, NOW)
    # three pages a minute: a 429 before the 4th, 7th, ... page, each waiting a full minute
    assert slept == [60.0] * ((pages - 1) // 3)
    assert len(exports) == pages + len(slept)


def test_a_failed_poll_against_the_fake_changes_nothing(desk):
    clock = Clock(NOW)
    with FakeZendesk(desk, clock=clock, export_limit=None) as fake:
        zendesk = zendesk_source(fake, clock)
        zendesk.client.max_retries = 0
        zendesk.read(NOW)
        kept = zendesk._state
        clock.t = NOW + DAY
        fake.serve_malformed_next()
        with pytest.raises(UpstreamError) as error:
            zendesk.read(NOW + DAY)
        assert error.value.reason == "malformed"
        assert zendesk._state is kept
        data = zendesk.read(NOW + DAY)
        assert {t.id: t for t in data.tickets} == expected_tickets(desk, NOW + DAY)


def test_poll_exports_the_desks_backlog(desk, fake):
    samples = zendesk_source(fake, lambda: NOW).poll()
    backlog = [s for s in samples if s.kpi == "support_open_tickets"]
    assert all(s.labels["source"] == "zendesk" for s in samples)
    assert sum(s.value for s in backlog) == sum(1 for v in desk.at(NOW) if v.solved is None)
    by_status = {}
    for v in desk.at(NOW):
        if v.solved is None:
            by_status[v.status] = by_status.get(v.status, 0) + 1
    got = {}
    for s in backlog:
        got[s.labels["status"]] = got.get(s.labels["status"], 0) + s.value
    assert got == by_status


def test_the_first_poll_finds_tickets_unchanged_for_months_by_search_and_reads_30_days():
    """A desk with forgotten tickets (replied two months ago, never solved): the first
    poll searches the backlog and exports only the last 30 days, and its KPIs equal
    those of the desk's own records, the forgotten tickets' old replies included."""
    from dataclasses import replace

    from exporter.simulator.support_company import SupportTicket
    from exporter.simulator.zendesk_fake import SEARCH_EXPORT_PATH
    from exporter.sources.helpdesk import export as helpdesk_export
    from exporter.sources.helpdesk.export import HelpdeskData

    desk = generate_support(seed=5, now=NOW)
    forgotten = [SupportTicket(id=90_000 + n, subject="Forgotten", requester="x@example.com",
                               priority=priority, created=NOW - (60 + n) * DAY,
                               first_reply=NOW - (59 + n) * DAY, solved=None,
                               waiting_status=status)
                 for n, (priority, status) in enumerate([("low", "hold"), ("high", "pending")])]
    desk = replace(desk, tickets=desk.tickets + forgotten)
    with FakeZendesk(desk, clock=lambda: NOW, export_limit=None) as fake:
        zendesk = zendesk_source(fake, lambda: NOW)
        samples = zendesk.poll()
        data = zendesk.read(NOW)  # the second read continues from the cursor
        searches = [q for _, path, q in fake.requests if path == SEARCH_EXPORT_PATH]
        starts = [q.get("start_time") for _, path, q in fake.requests if path == EXPORT_PATH]
    assert len(searches) == 1 and starts[0] == [str(NOW - 30 * DAY)]
    want = expected_tickets(desk, NOW)
    got = {t.id: t for t in data.tickets}
    assert set(got) == set(want)
    for ticket in forgotten:  # in the backlog, their replies outside every window
        assert got[str(ticket.id)] == replace(want[str(ticket.id)], first_reply=None,
                                              first_reply_seconds=None)
    truth = helpdesk_export.samples("zendesk", HelpdeskData(list(want.values()),
                                                            sorted(expected_ratings(desk, NOW),
                                                                   key=lambda r: r.id)), NOW)
    assert sorted((s.kpi, sorted(s.labels.items()), s.value) for s in samples) == \
        sorted((s.kpi, sorted(s.labels.items()), s.value) for s in truth)


def test_backfilled_steps_equal_what_a_poll_at_each_step_would_have_seen():
    """One backfill read of a desk; at each past step, every KPI but the backlog by
    status equals a fresh source polling the fake as the desk stood then."""
    from exporter.backfill import steps as backfill_steps

    now = 1_800_000_000
    desk = generate_support(seed=5, now=now)
    clock = Clock(now)
    moments = backfill_steps(now, 20, DAY)
    with FakeZendesk(desk, clock=clock, export_limit=None) as fake:
        backfilled = dict(zendesk_source(fake, lambda: now).backfill(moments))
        for at in (moments[0], moments[7], moments[-2]):
            clock.t = at
            live = zendesk_source(fake, lambda: at).poll()
            want = sorted((s.kpi, sorted(s.labels.items()), s.value) for s in live
                          if s.kpi != "support_open_tickets")
            got = sorted((s.kpi, sorted(s.labels.items()), s.value) for s in backfilled[at])
            assert got == want, at
            assert {kpi for kpi, _, value in got if value} >= {
                "support_tickets_created", "support_tickets_solved", "support_first_reply",
                "support_resolution", "support_csat"}, at
        clock.t = now
        live_now = zendesk_source(fake, lambda: now).poll()
    assert sorted((s.kpi, sorted(s.labels.items()), s.value) for s in backfilled[now]) == \
        sorted((s.kpi, sorted(s.labels.items()), s.value) for s in live_now)
