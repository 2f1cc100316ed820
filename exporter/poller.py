"""Poll every source in the background; keep the last good samples of each.

One daemon thread per source, each on its own interval, so a slow or broken
upstream delays nobody else. A scrape never waits for a poll: it reads the
state kept here. When a poll fails (any exception, bugs included) the source
is marked down, the error is logged, and the previous samples stay served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from exporter.http import ERROR_REASONS, UpstreamError
from exporter.secrets import redact
from exporter.sources.base import PartialPollError, Sample, Source, UpstreamDataError

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the poll duration histogram: a quick API poll takes
# well under a second, a first full read of a large account many minutes.
POLL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


# Why a poll failed: the HTTP client's reasons (a request that failed for good, a
# cap or deadline reached), `malformed` for data the source cannot use, `query`
# for a database query that failed, `internal` for a bug of ours.
FAILURE_REASONS = (*ERROR_REASONS, "query", "internal")


def failure_reason(exc: Exception) -> str:
    if isinstance(exc, UpstreamError):
        return exc.reason
    if isinstance(exc, PartialPollError):
        return "query"
    return "malformed" if isinstance(exc, UpstreamDataError) else "internal"


@dataclass(frozen=True)
class SourceState:
    samples: tuple[Sample, ...] = ()
    up: bool = False
    polled: bool = False  # a first poll has finished, success or not
    polling_since: float | None = None  # Unix time the running poll started; None between polls
    last_success: float | None = None  # Unix time
    last_duration: float = 0.0
    successes: int = 0
    failures: int = 0
    last_error: str = ""
    # Failed polls by why they failed (FAILURE_REASONS).
    failure_reasons: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    # The poll duration histogram: polls at most each POLL_BUCKETS bound (cumulative).
    poll_buckets: tuple[int, ...] = (0,) * len(POLL_BUCKETS)
    poll_seconds_sum: float = 0.0

    @property
    def syncing(self) -> bool:
        """The first poll is still running: the source is neither up nor down yet."""
        return self.polling_since is not None and not self.polled


def labelled(name: str, samples) -> tuple[Sample, ...]:
    """The samples with `source` set to the source's name in the config (a second
    Stripe account, `stripe_eu`, labels its series so, not `stripe`)."""
    return tuple(s if s.labels.get("source", name) == name
                 else Sample(s.kpi, {**s.labels, "source": name}, s.value) for s in samples)


class Poller:
    def __init__(self, sources: list[Source], *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.sources = list(sources)
        self._clock = clock
        self._monotonic = monotonic
        self._states = {source.name: SourceState() for source in self.sources}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Called on the poll thread after every poll (runtime.HeapFreezer in `serve`).
        self.after_poll: Callable[[], None] | None = None

    def start(self) -> None:
        for source in self.sources:
            thread = threading.Thread(target=self._run, args=(source,),
                                      name=f"poll-{source.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling. A source closes itself when its thread ends, so a poll still
        waiting on a slow upstream never has its connection closed under it."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if not self._threads:  # never started: nobody else will close them
            for source in self.sources:
                source.close()

    def _run(self, source: Source) -> None:
        next_poll = self._monotonic()
        try:
            while not self._stop.is_set():
                self.poll_once(source)
                # Schedule from the start of the last poll, so intervals do not drift.
                next_poll += source.poll_interval
                delay = next_poll - self._monotonic()
                if delay < 0:  # the poll took longer than the interval: start again now
                    next_poll, delay = self._monotonic(), 0
                self._stop.wait(delay)
        finally:
            source.close()

    def poll_once(self, source: Source) -> SourceState:
        try:
            return self._poll(source)
        finally:
            if self.after_poll is not None:
                self.after_poll()

    def _poll(self, source: Source) -> SourceState:
        started = self._monotonic()
        with self._lock:
            self._states[source.name] = dataclasses.replace(self._states[source.name],
                                                            polling_since=self._clock())
        scope = getattr(source, "poll_scope", contextlib.nullcontext)
        try:
            with scope():
                samples = source.poll()
        except Exception as exc:  # a source bug must not kill its thread or others
            duration = self._monotonic() - started
            # Upstream and data errors are expected; anything else is a bug: show its traceback.
            expected = isinstance(exc, (UpstreamError, UpstreamDataError, PartialPollError))
            log.error("%s: poll failed after %.1fs: %s: %s; serving the last good values",
                      source.name, duration, type(exc).__name__, exc, exc_info=not expected)
            partial = {"samples": labelled(source.name, exc.samples)} \
                if isinstance(exc, PartialPollError) else {}
            return self._update(source.name, polled=True, up=False, last_duration=duration,
                                failed=True, last_error=redact(f"{type(exc).__name__}: {exc}"),
                                reason=failure_reason(exc), **partial)
        duration = self._monotonic() - started
        log.info("%s: poll succeeded in %.2fs (%d series)", source.name, duration, len(samples))
        return self._update(source.name, polled=True, up=True, last_duration=duration,
                            samples=labelled(source.name, samples), last_success=self._clock(),
                            failed=False,
                            last_error="")

    def _update(self, name: str, *, failed: bool, reason: str | None = None,
                **changes) -> SourceState:
        with self._lock:
            state = self._states[name]
            if failed:
                changes["failures"] = state.failures + 1
                changes["failure_reasons"] = {**state.failure_reasons,
                                              reason: state.failure_reasons[reason] + 1}
            else:
                changes["successes"] = state.successes + 1
            duration = changes["last_duration"]
            changes["poll_buckets"] = tuple(count + (duration <= bound) for bound, count
                                            in zip(POLL_BUCKETS, state.poll_buckets))
            changes["poll_seconds_sum"] = state.poll_seconds_sum + duration
            state = dataclasses.replace(state, polling_since=None, **changes)
            self._states[name] = state
            return state

    def states(self) -> dict[str, SourceState]:
        with self._lock:
            return dict(self._states)

    def ready(self) -> bool:
        """True once every source has finished its first poll."""
        return all(state.polled for state in self.states().values())

