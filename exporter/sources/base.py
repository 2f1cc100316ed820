"""What every source provides: a config parser, and a poll that returns samples.

A source's `poll()` does all its upstream I/O and returns plain `Sample`s; the
poller keeps the last good list and the collector renders it on each scrape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from exporter.config import Section
from exporter.http import HttpClient


class UpstreamDataError(ValueError):
    """An upstream answered, but with data we cannot use (a missing field, a
    wrong type). Like an HTTP failure, it marks the source down."""


@dataclass(frozen=True)
class Sample:
    metric: str
    labels: dict[str, str]
    value: float


class Source(Protocol):
    name: str
    poll_interval: float

    def poll(self) -> list[Sample]:
        """Fetch from upstream and compute every KPI; raise on failure."""

    def request_stats(self) -> dict | None:
        """The HTTP client's counters (see exporter.http.RequestStats.snapshot)."""

    def close(self) -> None: ...


class SourceType(Protocol):
    def parse_config(self, section: Section) -> Any:
        """Read this source's config section; raise section.error(...) on bad input."""

    def create(self, source_config: Any, config: Any) -> Source:
        """Build the source from its own config and the whole `Config`."""


class HttpSource:
    """What every source that talks to its API through one HttpClient shares."""

    client: HttpClient

    def request_stats(self) -> dict:
        return self.client.stats.snapshot()

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class Registration:
    """A SourceType from its two functions (what exporter.sources registers by name)."""

    parse_config: Callable[[Section], Any]
    create: Callable[[Any, Any], Source]
