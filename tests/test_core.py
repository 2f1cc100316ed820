"""Poller, collector and HTTP endpoints, with stand-in sources.

The stand-ins only replace the upstream; the poller threads, the collector and
the HTTP server are the real ones, reached over a real socket.
"""

import threading

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.collector import KpiCollector
from exporter.poller import Poller
from exporter.server import BackgroundHttpServer, make_app
from exporter.sources.base import Sample


class StandIn:
    """A source whose poll runs whatever the test says."""

    def __init__(self, name="stripe", behaviour=None, poll_interval=3600):
        self.name = name
        self.poll_interval = poll_interval
        self.behaviour = behaviour or (lambda: [Sample("mrr", {"source": name}, 100.0)])
        self.polls = 0

    def poll(self):
        self.polls += 1
        return self.behaviour()

    def request_stats(self):
        return {"requests": 7, "retries": 2, "errors": {"timeout": 1},
                "rate_limit_wait_seconds": 0.5}

    def close(self):
        pass


def registry_for(poller):
    registry = CollectorRegistry()
    registry.register(KpiCollector(poller))
    return registry


def test_failed_poll_keeps_last_values_and_marks_down():
    results = iter([lambda: [Sample("mrr", {"source": "stripe"}, 100.0)],
                    lambda: (_ for _ in ()).throw(RuntimeError("upstream exploded"))])
    source = StandIn(behaviour=lambda: next(results)())
    poller = Poller([source])
    registry = registry_for(poller)

    poller.poll_once(source)
    assert registry.get_sample_value("kpi_mrr", {"source": "stripe"}) == 100
    assert registry.get_sample_value("kpi_source_up", {"source": "stripe"}) == 1
    last_success = registry.get_sample_value("kpi_source_last_success_timestamp_seconds",
                                             {"source": "stripe"})
    assert last_success > 0

    state = poller.poll_once(source)
    assert state.up is False and "upstream exploded" in state.last_error
    assert registry.get_sample_value("kpi_mrr", {"source": "stripe"}) == 100  # kept
    assert registry.get_sample_value("kpi_source_up", {"source": "stripe"}) == 0
    assert registry.get_sample_value("kpi_source_last_success_timestamp_seconds",
                                     {"source": "stripe"}) == last_success
    assert registry.get_sample_value("kpi_source_polls_total",
                                     {"source": "stripe", "result": "failure"}) == 1
    assert registry.get_sample_value("kpi_source_polls_total",
                                     {"source": "stripe", "result": "success"}) == 1


def test_a_broken_source_does_not_stop_another():
    def bug():
        raise KeyError("a bug in the adapter")

    broken = StandIn("broken", bug, poll_interval=0.01)
    healthy = StandIn("stripe", poll_interval=0.01)
    poller = Poller([broken, healthy])
    poller.start()
    try:
        deadline = threading.Event()
        for _ in range(200):
            if broken.polls >= 3 and healthy.polls >= 3:
                break
            deadline.wait(0.01)
    finally:
        poller.stop()
    assert broken.polls >= 3, "the broken source's thread died"
    assert healthy.polls >= 3
    states = poller.states()
    assert states["stripe"].up and not states["broken"].up


def test_registering_does_not_poll():
    source = StandIn()
    registry_for(Poller([source]))
    assert source.polls == 0


def test_request_counters_are_exported_with_every_reason():
    poller = Poller([StandIn()])
    registry = registry_for(poller)
    assert registry.get_sample_value("kpi_source_requests_total", {"source": "stripe"}) == 7
    assert registry.get_sample_value("kpi_source_request_retries_total", {"source": "stripe"}) == 2
    assert registry.get_sample_value("kpi_source_request_errors_total",
                                     {"source": "stripe", "reason": "timeout"}) == 1
    assert registry.get_sample_value("kpi_source_request_errors_total",
                                     {"source": "stripe", "reason": "auth"}) == 0
    assert registry.get_sample_value("kpi_source_rate_limit_wait_seconds_total",
                                     {"source": "stripe"}) == 0.5
    # before a first poll: neither up nor down, no KPI values, no last-success time
    assert registry.get_sample_value("kpi_source_up", {"source": "stripe"}) is None
    assert registry.get_sample_value("kpi_source_syncing", {"source": "stripe"}) == 0
    assert registry.get_sample_value("kpi_mrr", {"source": "stripe"}) is None
    assert registry.get_sample_value("kpi_source_last_success_timestamp_seconds",
                                     {"source": "stripe"}) is None


def test_a_first_poll_still_running_is_syncing_not_down():
    """A first read of a large account takes minutes: KpiSourceDown must not fire for it."""
    started = threading.Event()
    gates = [threading.Event(), threading.Event()]  # one per poll: the test lets it finish
    outcomes = iter([RuntimeError("upstream exploded"), None])

    def slow():
        gate = gates[source.polls - 1]
        started.set()
        gate.wait(10)
        outcome = next(outcomes)
        if outcome:
            raise outcome
        return [Sample("mrr", {"source": "stripe"}, 100.0)]

    source = StandIn(behaviour=slow)
    poller = Poller([source])
    registry = registry_for(poller)

    def value(metric):
        return registry.get_sample_value(metric, {"source": "stripe"})

    def landing():
        app = make_app(registry, poller)
        return b"".join(app({"PATH_INFO": "/", "REQUEST_METHOD": "GET"}, lambda *a: None))

    for gate, during, after in [(gates[0], (1, None), (0, 0)),  # the first fails
                                (gates[1], (0, 0), (0, 1))]:    # a later poll is no sync
        started.clear()
        poll = threading.Thread(target=poller.poll_once, args=(source,))
        poll.start()
        assert started.wait(10)
        assert (value("kpi_source_syncing"), value("kpi_source_up")) == during
        assert (b"syncing" in landing()) == (during[0] == 1)
        gate.set()
        poll.join(10)
        assert (value("kpi_source_syncing"), value("kpi_source_up")) == after


def test_health_metrics_emitted_by_a_source_are_exported():
    source = StandIn(behaviour=lambda: [
        Sample("unconverted_objects", {"source": "stripe", "currency": "gbp"}, 3.0)])
    poller = Poller([source])
    poller.poll_once(source)
    assert registry_for(poller).get_sample_value(
        "kpi_unconverted_objects", {"source": "stripe", "currency": "gbp"}) == 3


def test_samples_outside_the_catalog_are_dropped_and_logged(caplog):
    source = StandIn(behaviour=lambda: [Sample("mystery", {"source": "stripe"}, 1.0),
                                        Sample("mrr", {"source": "stripe", "x": "y"}, 2.0),
                                        Sample("mrr", {"source": "stripe"}, 3.0)])
    poller = Poller([source])
    poller.poll_once(source)
    registry = registry_for(poller)
    with caplog.at_level("ERROR"):
        assert registry.get_sample_value("kpi_mrr", {"source": "stripe"}) == 3
        assert registry.get_sample_value("kpi_mystery", {"source": "stripe"}) is None
    assert any("mystery" in r.getMessage() for r in caplog.records)


@pytest.fixture
def served():
    """A real server on an ephemeral port, with a source the test can block."""
    release = threading.Event()
    started = threading.Event()

    def slow_poll():
        started.set()
        release.wait(30)  # an upstream that hangs until the test lets it go
        return [Sample("mrr", {"source": "stripe"}, 42.0)]

    source = StandIn(behaviour=slow_poll)
    poller = Poller([source])
    server = BackgroundHttpServer("127.0.0.1", 0, make_app(registry_for(poller), poller)).start()
    poller.start()
    started.wait(5)
    yield f"http://127.0.0.1:{server.port}", release, poller
    release.set()
    poller.stop()
    server.stop()


def test_scrape_does_not_wait_for_a_hanging_upstream(served):
    url, release, poller = served
    # The poll is blocked inside the upstream call; a scrape must answer anyway.
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert 'kpi_source_syncing{source="stripe"} 1.0' in response.text
    assert "kpi_source_up{" not in response.text and "kpi_mrr{" not in response.text
    assert requests.get(url + "/ready", timeout=5).status_code == 503

    release.set()
    for _ in range(100):
        if poller.ready():
            break
        threading.Event().wait(0.02)
    assert requests.get(url + "/ready", timeout=5).status_code == 200
    assert 'kpi_mrr{source="stripe"} 42.0' in requests.get(url + "/metrics", timeout=5).text


def test_endpoints(served):
    url, _, _ = served
    assert requests.get(url + "/healthz", timeout=5).text == "ok\n"
    ready = requests.get(url + "/ready", timeout=5)
    assert ready.status_code == 503 and "stripe" in ready.text
    landing = requests.get(url + "/", timeout=5)
    assert landing.status_code == 200 and 'href="/metrics"' in landing.text
    assert requests.get(url + "/nope", timeout=5).status_code == 404
    metrics = requests.get(url + "/metrics", timeout=5)
    assert metrics.headers["Content-Type"].startswith("text/plain")


def test_poll_errors_are_redacted_and_bugs_get_a_traceback(capsys):
    from exporter.app import setup_logging
    from exporter.secrets import Secret
    from exporter.sources.base import UpstreamDataError

    key = Secret("sk_live_pollerleak42").reveal()

    def bug():
        raise RuntimeError(f"oops with {key}")

    def bad_data():
        raise UpstreamDataError("subscription sub_1: field 'status' is missing")

    setup_logging("info")  # the logging the command line installs
    bug_source, data_source = StandIn("stripe", bug), StandIn("other", bad_data)
    poller = Poller([bug_source, data_source])
    state = poller.poll_once(bug_source)
    bug_log = capsys.readouterr().err
    poller.poll_once(data_source)
    data_log = capsys.readouterr().err
    assert key not in state.last_error and "oops with ***" in state.last_error
    assert "Traceback" in bug_log and "oops with ***" in bug_log  # a bug: a traceback to report
    assert key not in bug_log
    assert "Traceback" not in data_log and "field 'status' is missing" in data_log
