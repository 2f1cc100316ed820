"""The /metrics body, with the text of the sources' series kept from one poll to the next.

Formatting is most of what a scrape costs (the demo's 800 series take about
15 ms), and while a poll computes, every millisecond a scrape needs the GIL is
shared with it. The series that come from the sources' samples change only
when a poll ends, so their text is rendered once for each set of samples, in
the format asked for (Prometheus text or OpenMetrics, gzipped or not), and
kept; the poller's health series and the process's own are rendered on every
scrape and appended. Two gzip members in a row are one gzip stream to
Prometheus (Go's reader reads multistream) and to every other client.
"""

from __future__ import annotations

import gzip
import threading
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.collector import KpiCollector

EOF_LINE = b"# EOF\n"


class _Part:
    """A registry's view of one part of the KpiCollector (no describe: no names)."""

    def __init__(self, collect: Callable[[], Iterable[Any]]):
        self.collect = collect


def _registry(*collectors: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    return registry


class MetricsApp:
    """The WSGI app of /metrics. `others`: collectors rendered on every scrape beside
    the poller's health series (the process, platform and GC collectors)."""

    def __init__(self, kpis: KpiCollector, others: Iterable[Any] = ()):
        self.kpis = kpis
        self._live = _registry(_Part(lambda: self.kpis.collect_health(self.kpis.poller.states())),
                               *others)
        self._lock = threading.Lock()
        self._samples: tuple = ()  # the samples the kept text is of, by identity
        self._text: dict[tuple[str, bool], bytes] = {}  # (content type, gzipped) -> body part

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        kept = self._kept_text(encoder, content_type, gzipped)
        live = encoder(self._live)
        body = kept + (gzip.compress(live) if gzipped else live)
        headers = [("Content-Type", content_type)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    def _kept_text(self, encoder, content_type: str, gzipped: bool) -> bytes:
        states = self.kpis.poller.states()
        samples = tuple(state.samples for state in states.values())
        with self._lock:
            if len(samples) != len(self._samples) or any(
                    a is not b for a, b in zip(samples, self._samples)):
                self._samples, self._text = samples, {}
            key = (content_type, gzipped)
            if key not in self._text:
                text = encoder(_registry(_Part(lambda: self.kpis.collect_samples(states))))
                if text.endswith(EOF_LINE):
                    text = text[:-len(EOF_LINE)]  # OpenMetrics ends once, after the live part
                self._text[key] = gzip.compress(text) if gzipped else text
            return self._text[key]
