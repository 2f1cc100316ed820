"""Measure the exporter against the simulator and print the figures.

    python bench/bench_exporter.py [--customers 3000] [--scrapes 200] [--latency 0]

What it measures, with the real exporter and the fake Stripe over loopback:
- poll time: the first Stripe poll (every page, the 30 days of events, a
  year of invoices) and a later one (new events only), with request counts;
  the same for the fake Mailgun's four domains;
- the CRM polls: HubSpot (a full read, then an incremental one) and Salesforce
  (every poll reads the open pipeline and the last 90/30 days), at each
  source's default client-side rate limit except where noted; the helpdesk
  polls: Zendesk (the full export, then from the cursor) and Intercom (the
  full search, then changes since);
- scrape latency: /metrics round trips, idle and while a slow poll is running;
- memory: peak traced Python allocations during a poll, and the process RSS.

Goals (not asserted anywhere; compare the printed figures): a poll of 3,000
customers well under the default 5-minute interval, scrapes in a few
milliseconds whatever the upstream does, and memory in tens of MB.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import threading
import time
import tracemalloc

import requests


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def scrape_latencies(url: str, count: int) -> list[float]:
    session = requests.Session()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url + "/metrics", timeout=10)
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def report(label: str, latencies: list[float]) -> None:
    ms = [x * 1000 for x in latencies]
    print(f"  {label:<28} p50 {statistics.median(ms):7.2f} ms   p99 {percentile(ms, 99):7.2f} ms"
          f"   max {max(ms):7.2f} ms   (n={len(ms)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the fake Stripe waits before each response")
    args = parser.parse_args()
    # Here, not at the top: bench_stripe.py imports this module's helpers, and the
    # simulator (18 MiB of modules) is not part of the process it measures.
    from exporter.demo import DemoExporter

    started = time.perf_counter()
    exporter = DemoExporter(listen=("127.0.0.1", 0), customers=args.customers, live=False,
                            poll_interval=3600)
    print(f"simulated company: {args.customers} customers, built in "
          f"{time.perf_counter() - started:.2f} s")
    fake = exporter.fake_stripe
    source = exporter.sources[0]
    exporter.server.start()
    try:
        fake.set_latency(args.latency)
        started = time.perf_counter()
        exporter.poller.poll_once(source)
        poll_seconds = time.perf_counter() - started
        state = exporter.poller.states()[source.name]
        print(f"first poll: {poll_seconds:.2f} s, {fake.request_count} requests, "
              f"{len(state.samples)} series, up={state.up}")
        # Later polls fetch only new events and reuse the day's invoice cohort.
        fake.reset_log()
        started = time.perf_counter()
        exporter.poller.poll_once(source)
        print(f"later poll: {time.perf_counter() - started:.2f} s, {fake.request_count} requests")
        # A second poll under tracemalloc (slower) for the exporter's own allocations;
        # RSS also holds the simulator, which runs in this process.
        tracemalloc.start()
        exporter.poller.poll_once(source)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"memory: peak traced during a poll {peak / 2**20:.1f} MiB, max RSS of exporter "
              f"and simulator {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")

        # Mailgun: two Metrics API queries, the domain list, and the suppression lists
        # (walked page by page on the first poll, reused until suppressions_interval).
        mailgun_fake, mailgun = exporter.fake_mailgun, exporter.sources[1]
        for label in ("first", "later"):
            mailgun_fake.reset_log()
            started = time.perf_counter()
            exporter.poller.poll_once(mailgun)
            print(f"mailgun {label} poll: {time.perf_counter() - started:.3f} s, "
                  f"{mailgun_fake.request_count} requests, "
                  f"{len(exporter.poller.states()[mailgun.name].samples)} series")

        # The CRMs and the helpdesks (Zendesk's export paced by the demo's raised limit).
        crm = [(exporter.fake_hubspot, "hubspot"), (exporter.fake_salesforce, "salesforce"),
               (exporter.fake_zendesk, "zendesk"), (exporter.fake_intercom, "intercom")]
        for crm_fake, name in crm:
            crm_source = next(s for s in exporter.sources if s.name == name)
            for label in ("first", "later"):
                crm_fake.reset_log()
                started = time.perf_counter()
                exporter.poller.poll_once(crm_source)
                state = exporter.poller.states()[name]
                print(f"{name} {label} poll: {time.perf_counter() - started:.2f} s, "
                      f"{crm_fake.request_count} requests, {len(state.samples)} series, "
                      f"up={state.up}")

        print("scrape latency:")
        report("idle", scrape_latencies(exporter.url, args.scrapes))

        fake.set_latency(0.5)  # every upstream request now takes half a second
        polling = threading.Thread(target=exporter.poller.poll_once, args=(source,), daemon=True)
        polling.start()
        time.sleep(0.2)
        during = scrape_latencies(exporter.url, args.scrapes)
        still_polling = polling.is_alive()
        report("during a slow poll", during)
        print(f"  the slow poll was still running after the scrapes: {still_polling}")
        size = len(requests.get(exporter.url + "/metrics", timeout=10).content)
        print(f"exposition size: {size} bytes")
    finally:
        fake.set_latency(0)
        exporter.stop()


if __name__ == "__main__":
    main()
