"""Interpreter settings for a process that answers scrapes while polls compute.

Polls are CPU-bound Python on their own threads; a scrape waits for the GIL
between them, and for every full garbage collection, which stops all threads
and walks every object the sources keep (a large Stripe account holds
millions: seconds per collection). Two settings keep scrapes short
(bench/bench_stripe.py measures them, `--untuned` without them):

- a 1 ms GIL switch interval instead of 5 ms, so the thread answering a
  scrape gets its turns sooner;
- `gc.freeze()` every 20 ms and after each poll: what a poll holds by then
  is long-lived, and frozen objects are left out of every later collection
  (freezing is cheap: a list splice), so a collection only ever walks the
  last few milliseconds' objects (on 30,000 subscriptions, freezing every
  second left steady polls 200 ms of collections, some 15-48 ms long; every
  20 ms, 43 ms, none over 2 ms). Objects freed by reference counting are
  freed as always; only reference cycles among frozen objects wait, so once
  a day everything is unfrozen and collected (the demo makes about 1,200
  such objects a minute, whether freezing every second or every 20 ms).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Callable

SWITCH_INTERVAL = 0.001  # seconds; CPython's default is 0.005
FREEZE_EVERY = 0.02
THAW_EVERY = 24 * 3600.0


def tune_for_serving() -> None:
    sys.setswitchinterval(SWITCH_INTERVAL)


class HeapFreezer:
    def __init__(self, thaw_every: float = THAW_EVERY,
                 monotonic: Callable[[], float] = time.monotonic):
        self.thaw_every = thaw_every
        self._monotonic = monotonic
        self._thawed_at = monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def freeze(self) -> None:
        """Freeze what is alive now (from any thread); thaw and collect once a day."""
        with self._lock:
            if self._monotonic() - self._thawed_at >= self.thaw_every:
                gc.unfreeze()
                gc.collect()
                self._thawed_at = self._monotonic()
            gc.freeze()

    def start(self, every: float = FREEZE_EVERY) -> "HeapFreezer":
        def run() -> None:
            while not self._stop.wait(every):
                self.freeze()

        self._thread = threading.Thread(target=run, name="heap-freezer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
