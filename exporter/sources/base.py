"""What every source provides: a config parser, and a poll that returns samples.

A source's `poll()` does all its upstream I/O and returns plain `Sample`s; the
poller keeps the last good list and the collector renders it on each scrape.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, ContextManager, Protocol

from exporter.config import Section
from exporter.http import HttpClient


class UpstreamDataError(ValueError):
    """An upstream answered, but with data we cannot use (a missing field, a
    wrong type). Like an HTTP failure, it marks the source down."""


class PartialPollError(Exception):
    """Part of a poll failed (one of several queries): the source is down, but the parts
    that worked report fresh values and the failed ones their last (`samples`)."""

    def __init__(self, samples: list["Sample"], message: str):
        super().__init__(message)
        self.samples = samples


@dataclass(frozen=True)
class Sample:
    """One value of one series: `kpi` is the catalog key (`customer_churn_rate`), not
    the metric name, so names live in the catalog only."""

    kpi: str
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


def decimal_or_none(value: Any, what: str) -> Decimal | None:
    """An upstream number (JSON number or numeric string; null or "" for none) as an exact
    decimal; anything else is an UpstreamDataError naming `what`."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UpstreamDataError(f"{what} is {value!r}, not a number")
    try:
        number = Decimal(str(value))  # str(): a float's shortest repr, not its binary value
    except InvalidOperation:
        raise UpstreamDataError(f"{what} is {value!r}, not a number") from None
    if not number.is_finite():
        raise UpstreamDataError(f"{what} is {value!r}, not a number")
    return number


class HttpSource:
    """What every source that talks to its API through one HttpClient shares."""

    client: HttpClient
    config: Any  # the source's own config, with `limits`
    _warned: set[str] | None = None

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        """Log a warning the first time only: a condition that every poll will meet again."""
        if self._warned is None:
            self._warned = set()
        if key not in self._warned:
            self._warned.add(key)
            logging.getLogger(type(self).__module__).warning(message, *args)

    def request_stats(self) -> dict:
        return self.client.stats.snapshot()

    def poll_scope(self) -> ContextManager[None]:
        """The bounds of one poll (the config's `max_requests_per_poll` and `poll_timeout`)."""
        limits = self.config.limits
        return self.client.poll_scope(limits.max_requests, limits.timeout)

    def close(self) -> None:
        self.client.close()


def http_client(name: str, source_config: Any, *, base_url: str | None = None,
                headers: dict[str, str] | None = None, **overrides: Any) -> HttpClient:
    """A source's HTTP client from its common options (timeout, rate_limit); tests
    override e.g. `sleep`."""
    options = {"read_timeout": source_config.timeout,
               "rate_limit": getattr(source_config, "rate_limit", None), **overrides}
    return HttpClient(name, base_url or source_config.base_url, headers=headers, **options)


@dataclass(frozen=True)
class Registration:
    """A SourceType from its two functions (what exporter.sources registers by name)."""

    parse_config: Callable[[Section], Any]
    create: Callable[[Any, Any], Source]
