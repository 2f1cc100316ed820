"""A bounded soak: faults flipping on every fake upstream while /metrics is scraped once a second.

    python bench/soak.py [--minutes 4] [--poll-interval 5]

The demo exporter polls the six fakes every few seconds; every 10 seconds each
fake is given a new fault at random (5xx bursts, 429s, malformed bodies,
latency past the client's timeout, or none). Prints, per minute, the process's
RSS and thread count and the scrape latencies; at the end every fault is
cleared, each source polled once more, and the run says whether all are up.

Goals (printed, not asserted): RSS and threads flat after the first minute,
no scrape over a second, every source up at the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

import requests

from exporter.demo import DemoExporter

FAULTS = ("none", "none", "5xx", "429", "malformed", "slow")


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def inject(fake, fault: str) -> None:
    fake.set_latency(0)
    if fault == "5xx":
        fake.fail_next(20, status=503)
    elif fault == "429":
        fake.fail_next(20, status=429, headers={"Retry-After": "1"})
    elif fault == "malformed":
        fake.serve_malformed_next(5)
    elif fault == "slow":
        fake.set_latency(2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()

    demo = DemoExporter(listen=("127.0.0.1", 0), customers=args.customers,
                        poll_interval=args.poll_interval)
    for source in demo.sources:  # the slow fault must pass the client's read timeout
        source.client.timeout = (5.0, 1.0)
    fakes = [demo.fake_stripe, demo.fake_mailgun, demo.fake_hubspot, demo.fake_salesforce,
             demo.fake_zendesk, demo.fake_intercom]
    demo.start()
    stop = threading.Event()
    rng = random.Random(1)

    def flip() -> None:
        while not stop.wait(10):
            for fake in fakes:
                inject(fake, rng.choice(FAULTS))

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    session = requests.Session()
    minute, latencies, deadline = 0, [], time.monotonic() + args.minutes * 60
    print(f"{'minute':>6} {'RSS MiB':>8} {'threads':>8} {'scrape p50 ms':>14} {'max ms':>8}")
    started = time.monotonic()
    try:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            session.get(demo.url + "/metrics", timeout=10).raise_for_status()
            latencies.append((time.perf_counter() - t0) * 1000)
            if time.monotonic() - started >= (minute + 1) * 60:
                minute += 1
                print(f"{minute:>6} {rss_mib():>8.1f} {threading.active_count():>8} "
                      f"{statistics.median(latencies):>14.1f} {max(latencies):>8.1f}", flush=True)
                latencies = []
            time.sleep(max(0.0, 1 - (time.perf_counter() - t0)))
        stop.set()
        flipper.join()
        for fake in fakes:
            fake.clear_faults()
        states = [demo.poller.poll_once(source) for source in demo.sources]
        up = {source.name: state.up for source, state in zip(demo.sources, states)}
        print(f"after the faults cleared: {sum(up.values())} of {len(up)} sources up {up}")
    finally:
        demo.stop()


if __name__ == "__main__":
    main()
