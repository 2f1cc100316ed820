"""runtime.py: what `serve` sets so that scrapes stay short while polls compute."""

import gc
import sys
import time
import weakref

from exporter.runtime import SWITCH_INTERVAL, HeapFreezer, tune_for_serving


class Cycle:
    def __init__(self):
        self.me = self  # garbage that only a collection frees


def test_the_heap_is_frozen_after_polls_and_thawed_and_collected_daily():
    clock = {"now": 0.0}
    freezer = HeapFreezer(thaw_every=100, monotonic=lambda: clock["now"])
    gc.unfreeze()
    try:
        kept = Cycle()
        ref = weakref.ref(kept)
        freezer.freeze()
        assert gc.get_freeze_count() > 0  # what the poll kept is out of the collector's way
        del kept
        gc.collect()
        assert ref() is not None  # frozen: not even a full collection walks it
        clock["now"] = 99.0
        freezer.freeze()
        assert ref() is not None
        clock["now"] = 100.0
        freezer.freeze()  # a day on: thawed, collected, frozen again
        assert ref() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_the_freezer_thread_freezes_what_a_running_poll_holds():
    gc.unfreeze()
    freezer = HeapFreezer().start(every=0.01)
    try:
        for _ in range(500):
            if gc.get_freeze_count() > 0:
                break
            time.sleep(0.01)
        assert gc.get_freeze_count() > 0
    finally:
        freezer.stop()
        gc.unfreeze()


def test_serving_uses_a_short_switch_interval():
    default = sys.getswitchinterval()
    try:
        tune_for_serving()
        assert sys.getswitchinterval() == SWITCH_INTERVAL
    finally:
        sys.setswitchinterval(default)
