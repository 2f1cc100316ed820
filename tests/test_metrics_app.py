"""/metrics through exposition.MetricsApp: the sources' series kept from one poll to the
next, the poller's health and the process's own rendered on every scrape."""

import gzip

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import KpiCollector
from exporter.exposition import MetricsApp
from exporter.poller import Poller
from exporter.sources.base import Sample
from test_core import StandIn

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def scrape(app, accept=None, gzip_ok=False) -> tuple[dict, bytes]:
    answer = {}
    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    if accept:
        environ["HTTP_ACCEPT"] = accept
    if gzip_ok:
        environ["HTTP_ACCEPT_ENCODING"] = "gzip, deflate"
    body = b"".join(app(environ, lambda status, headers: answer.update(headers)))
    return answer, body


def families(text: str) -> dict:
    return {f.name: sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples
                           if not s.name.endswith("_created"))
            for f in text_string_to_metric_families(text)}


def setup(value=lambda: 100.0):
    source = StandIn(behaviour=lambda: [Sample("mrr", {"source": "stripe"}, value())])
    poller = Poller([source])
    kpis = KpiCollector(poller)
    process = ProcessCollector(registry=None)
    whole = CollectorRegistry()
    whole.register(kpis)
    whole.register(process)
    return source, poller, MetricsApp(kpis, [process]), whole


def test_the_body_is_the_whole_registry_in_every_format_and_encoding():
    source, poller, app, whole = setup()
    poller.poll_once(source)
    headers, text = scrape(app)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "Content-Encoding" not in headers
    volatile = {"process_cpu_seconds", "process_resident_memory_bytes",
                "process_virtual_memory_bytes", "process_open_fds"}

    def steady(found: dict) -> dict:
        return {name: samples for name, samples in found.items() if name not in volatile}

    assert steady(families(text.decode())) == steady(families(generate_latest(whole).decode()))
    headers, zipped = scrape(app, gzip_ok=True)
    assert headers["Content-Encoding"] == "gzip"
    assert steady(families(gzip.decompress(zipped).decode())) == steady(families(text.decode()))
    headers, om = scrape(app, accept=OPENMETRICS, gzip_ok=True)
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    om = gzip.decompress(om)  # two gzip members: one stream
    assert om.count(b"# EOF") == 1 and om.endswith(b"# EOF\n")
    expected = openmetrics_latest(whole).decode()
    got = {f.name for f in text_string_to_metric_families(om.decode().replace("# EOF\n", ""))}
    assert got == {f.name for f in text_string_to_metric_families(expected.replace("# EOF\n", ""))}
    assert b"kpi_mrr{source=\"stripe\"} 100.0" in om


def test_the_sources_text_is_rendered_again_only_when_a_poll_brings_new_samples():
    values = iter([100.0, 250.0])
    source, poller, app, _ = setup(lambda: next(values))
    poller.poll_once(source)
    renders = []
    collect_samples = app.kpis.collect_samples  # count the renders of the kept part

    def counting(states):
        renders.append(1)
        return collect_samples(states)

    app.kpis.collect_samples = counting
    first = scrape(app)[1]
    scrape(app)
    assert len(renders) == 1  # two scrapes, one render
    assert b'kpi_mrr{source="stripe"} 100.0' in first
    poller.poll_once(source)  # new samples
    second = scrape(app)[1]
    assert len(renders) == 2 and b'kpi_mrr{source="stripe"} 250.0' in second
    # the health series are live: the second poll counts at once
    assert b'kpi_source_polls_total{result="success",source="stripe"} 2.0' in second
    scrape(app, gzip_ok=True)
    assert len(renders) == 3  # one render per format and encoding asked for
