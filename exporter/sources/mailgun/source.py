"""The Mailgun source: its config, one poll, and the samples it exports.

A poll asks the Metrics API for each window's counts per sending domain
(fetch.py), caps the domains (kpis.py) and exports counts and rates. The
suppression lists can be long, so their sizes are fetched every
`suppressions_interval` and reused in between.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from exporter.config import PollLimits, Section
from exporter.http import HttpClient
from exporter.secrets import Secret
from exporter.sources.base import HttpSource, http_client, Registration, Sample
from exporter.sources.mailgun import fetch
from exporter.sources.mailgun.kpis import EVENTS, Counts, cap_domains, cap_sizes, kept_domains, rates

log = logging.getLogger(__name__)

NAME = "mailgun"
REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
HOUR = 3600
DAY = 24 * HOUR
WINDOWS = {"24h": 24 * HOUR, "7d": 7 * 24 * HOUR}
RANKING_WINDOW = "7d"  # domains are ranked by their volume over the longest window


@dataclass(frozen=True)
class MailgunConfig:
    api_key: Secret
    base_url: str = REGIONS["us"]
    domains: tuple[str, ...] = ()  # empty: every domain of the account
    max_domains: int = 20
    poll_interval: float = 300.0
    limits: PollLimits = PollLimits(5_000, 900.0)  # domains x lists x pages
    suppressions_interval: float = 3600.0
    rate_limit: float = 5.0  # requests per second
    timeout: float = 30.0


def parse_config(section: Section) -> MailgunConfig:
    region = section.string("region", "us")
    if region not in REGIONS:
        raise section.error("region", f"must be one of {', '.join(REGIONS)}")
    domains = section.convert("domains", (), _domain_list)
    return MailgunConfig(
        api_key=section.secret("api_key"),
        base_url=section.url("base_url", REGIONS[region]),
        domains=domains,
        max_domains=section.count("max_domains", MailgunConfig.max_domains),
        suppressions_interval=section.duration("suppressions_interval",
                                               MailgunConfig.suppressions_interval),
        **section.common(MailgunConfig),
    )


_HOSTNAME = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")


def _domain_list(value: Any) -> tuple[str, ...]:
    domains = [d.strip().lower() for d in value if isinstance(d, str)] \
        if isinstance(value, list) else None
    if not domains or len(domains) != len(value) or not all(_HOSTNAME.fullmatch(d) for d in domains):
        raise ValueError("must be a list of domain names, e.g. [mg.example.com]")
    return tuple(domains)


def make_client(source_config: MailgunConfig, **overrides: Any) -> HttpClient:
    """The HTTP client for Mailgun (basic auth, user `api`); tests override e.g. `sleep`."""
    token = base64.b64encode(f"api:{source_config.api_key.reveal()}".encode()).decode()
    return http_client(NAME, source_config, headers={"Authorization": f"Basic {token}"},
                       **overrides)


def _sample(kpi: str, value: float, **labels: str) -> Sample:
    return Sample(kpi, {"source": NAME, **labels}, float(value))


def samples(windows: dict[str, dict[str, Counts]],
            suppressions: dict[str, dict[str, int]]) -> list[Sample]:
    """Counts and rates per (capped) domain and window, and suppression list sizes."""
    result = []
    for window, by_domain in windows.items():
        for domain, counts in sorted(by_domain.items()):
            result += [_sample("email_events", getattr(counts, event), domain=domain,
                               event=event, window=window) for event in EVENTS]
            result += [_sample(f"email_{name}", value, domain=domain, window=window)
                       for name, value in sorted(rates(counts).items())]
    for domain, lists in sorted(suppressions.items()):
        result += [_sample("email_suppressions", size, domain=domain, list=kind)
                   for kind, size in sorted(lists.items())]
    return result


class MailgunSource(HttpSource):
    name = NAME

    def __init__(self, source_config: MailgunConfig, *, clock: Callable[[], float] = time.time,
                 client: HttpClient | None = None):
        self.config = source_config
        self.poll_interval = source_config.poll_interval
        self.clock = clock
        self.client = client or make_client(source_config)
        self._suppressions: tuple[float, dict[str, dict[str, int]]] | None = None

    def poll(self) -> list[Sample]:
        return self.poll_at(self.clock())

    def poll_at(self, now: float) -> list[Sample]:
        only = list(self.config.domains) or None
        windows = {window: fetch.event_counts(self.client, now - seconds, now, only)
                   for window, seconds in WINDOWS.items()}
        domains = list(self.config.domains) or fetch.domains(self.client)
        # Every domain is kept or summed, quiet ones included (zero counts, no rates).
        capped, kept = self._capped(windows, domains)
        return samples(capped, cap_sizes(self._suppression_sizes(domains, now), kept))

    def _capped(self, windows: dict[str, dict[str, Counts]], domains: list[str]
                ) -> tuple[dict[str, dict[str, Counts]], list[str]]:
        """The windows' counts of the max_domains domains with the most volume over
        the longest window (`domains` besides those with counts), the rest summed."""
        volume = dict.fromkeys(domains, 0)
        for domain, counts in windows[RANKING_WINDOW].items():
            volume[domain] = counts.accepted
        kept = kept_domains(volume, self.config.max_domains)
        return {window: cap_domains(by_domain, kept)
                for window, by_domain in windows.items()}, kept

    def backfill(self, steps: list[int]) -> Iterator[tuple[int, list[Sample]]]:
        """Counts and rates per domain over the 24 hours and 7 days ending at each past
        step, from one daily query (two, for the metrics) over the span; whole-day
        steps only, as Mailgun's days are. A domain's window is written once the answer
        holds that domain for all of it (from the first day it has events: Mailgun
        lists no quiet days, and keeps a plan's worth of them). The suppression lists
        are today's only. The last step is a poll. See backfill.py."""
        now, past = steps[-1], steps[:-1]
        if any(at % DAY for at in past):
            log.info("mailgun: backfills whole-day steps only (Mailgun counts by UTC day)")
            past = []
        if past:
            longest = max(WINDOWS.values())
            only = list(self.config.domains) or None
            days = fetch.daily_event_counts(self.client, past[0] - longest, past[-1], only)
            days = {day: counts for day, counts in days.items() if day + DAY <= past[-1]}
            first_day: dict[str, int] = {}
            for day in sorted(days):
                for domain in days[day]:
                    first_day.setdefault(domain, day)
            for at in past:
                windows = {window: _window(days, first_day, at - seconds, at)
                           for window, seconds in WINDOWS.items()}
                yield at, samples(self._capped(windows, [])[0], {})
        yield now, self.poll_at(now)

    def _suppression_sizes(self, domains: list[str], now: float) -> dict[str, dict[str, int]]:
        """Sizes of every domain's lists, fetched again only every suppressions_interval."""
        cached = self._suppressions
        if cached is not None and now - cached[0] < self.config.suppressions_interval \
                and set(cached[1]) == set(domains):
            return cached[1]
        sizes = {domain: {kind: fetch.suppression_size(self.client, domain, kind)
                          for kind in fetch.SUPPRESSION_LISTS} for domain in domains}
        self._suppressions = (now, sizes)
        return sizes


def _window(days: dict[int, dict[str, Counts]], first_day: dict[str, int], start: int,
            end: int) -> dict[str, Counts]:
    """Each domain's counts over the whole days from `start` to `end`, for the domains
    whose events the answer holds since `start` (a day without events counts zero)."""
    result = {domain: Counts() for domain, first in first_day.items() if first <= start}
    for day in range(start, end, DAY):
        for domain, counts in days.get(day, {}).items():
            if domain in result:
                result[domain] = result[domain] + counts
    return result


SOURCE_TYPE = Registration(parse_config, lambda source_config, config: MailgunSource(source_config))
