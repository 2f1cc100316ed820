"""The Stripe source at scale: a first and a steady poll, and scrapes meanwhile.

    python bench/bench_stripe.py [--customers 87000] [--copies 1] [--steady-polls 1]

The simulated company (about 1.15 subscriptions a customer: 87,000 customers
make some 100,000 subscriptions) is generated and served by the fake Stripe
in a child process, so what is measured here is the exporter alone: the
Stripe source with the exporter's collector and HTTP server, as `serve` runs
them, with no client-side rate limit (the request counts tell what a rate
limit would cost: at 25 requests a second, a thousand requests take 40 s).
`--copies 10` serves ten copies of the company (bench/copied_stripe.py): a
million subscriptions from the memory of 100,000.

Polls until the month of events and the `1y` cohort's year of invoices are read
(a poll reads them only until it has made 1,000 requests:
HISTORY_PAGES_PER_POLL in exporter/sources/stripe/source.py) are "history
polls", then come the steady ones.
Printed per poll: requests, wall time, CPU time of the polling thread (and
per 1,000 listed subscriptions), the peak RSS of the process during the poll
(VmHWM, reset before each poll), and the latencies of scrapes sent every 20 ms
while the poll ran, from another process (as Prometheus scrapes). Then issue
19's goals, each with this run's figure and whether it was met (printed, not
asserted anywhere): a steady poll at most 10 requests; CPU under 0.03 s per
1,000 subscriptions for a full sync; VmHWM under 100 MiB at 100k
subscriptions (400 MiB at 1M); scrapes during a full sync p99 under 10 ms
and none over 50 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from decimal import Decimal
from typing import NamedTuple

import requests

from bench_exporter import percentile, report  # bench/ is the script's directory: on sys.path
from exporter import runtime
from exporter.collector import KpiCollector
from exporter.exposition import MetricsApp
from exporter.poller import Poller
from exporter.secrets import Secret
from exporter.server import BackgroundHttpServer, make_app
from exporter.sources.stripe.source import StripeConfig, StripeSource
from prometheus_client import CollectorRegistry

FX = {"usd": Decimal(1), "eur": Decimal("1.1"), "gbp": Decimal("1.3")}


def serve_company(customers: int, copies: int, now: int, pipe) -> None:
    """The child: generate the company, serve it, report the URL, wait to be told to stop."""
    from copied_stripe import CopiedStripe
    from exporter.simulator.company import generate_company

    started = time.perf_counter()
    store = generate_company(customers=customers, now=now)
    generated = time.perf_counter() - started
    fake = CopiedStripe(store, copies).start()
    pipe.send((fake.url, fake.api_key, store.count("subscriptions") * copies, generated))
    pipe.recv()
    fake.stop()


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux 4.0 and later)


def scrape_while(url: str, running, pipe) -> None:
    """The scraper, in a process of its own as Prometheus is (a thread here would
    wait for the GIL too, and its waits would count as the exporter's)."""
    session = requests.Session()
    session.get(url + "/metrics", timeout=30).raise_for_status()
    pipe.send("ready")  # measure from the poll's start, not the process's
    latencies = []
    while running.is_set():
        started = time.perf_counter()
        session.get(url + "/metrics", timeout=30).raise_for_status()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    pipe.send(latencies)


class Measured(NamedTuple):
    requests: int
    cpu: float  # seconds of the polling thread
    hwm: float  # MiB
    latencies: list[float]  # of the scrapes during the poll, seconds
    history: bool  # whether all the history is read (the 1y cohort's series come last)


def measured_poll(label: str, poller: Poller, source: StripeSource, url: str,
                  subscriptions: int) -> Measured:
    """One poll, measured and printed."""
    reset_hwm()
    context = multiprocessing.get_context("spawn")  # not a fork of this big process
    running, (ours, theirs) = context.Event(), context.Pipe()
    running.set()
    scraper = context.Process(target=scrape_while, args=(url, running, theirs), daemon=True)
    scraper.start()
    ours.recv()  # scraping
    before = source.client.stats.snapshot()["requests"]
    cpu, started = time.thread_time(), time.perf_counter()
    state = poller.poll_once(source)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - started
    running.clear()
    latencies = ours.recv()
    scraper.join()
    requests_made = source.client.stats.snapshot()["requests"] - before
    events = "all" if source.events.complete else "partly"
    hwm = vm_hwm_mib()
    print(f"{label}: up={state.up}, {requests_made} requests, {wall:.1f} s, CPU {cpu:.1f} s "
          f"({cpu / subscriptions * 1000:.3f} s per 1,000 subscriptions), "
          f"VmHWM {hwm:.0f} MiB, events {events} read")
    if latencies:
        report("scrapes during it", latencies)
    else:
        print("  scrapes during it: none finished")
    return Measured(requests_made, cpu, hwm, latencies,
                    any(s.labels.get("window") == "1y" for s in state.samples))


def print_goals(subscriptions: int, first: Measured, polls: list[Measured],
                steady: list[Measured]) -> None:
    """Issue 19's goals against this run: the first poll is the full sync."""
    def line(goal: str, figure: str, met: bool | None) -> None:
        verdict = "no goal at this size" if met is None else "met" if met else "NOT met"
        print(f"  {goal:<62} {figure:<28} {verdict}")

    print("goals:")
    if steady:
        worst = max(m.requests for m in steady)
        line("a steady poll makes at most 10 requests", f"{worst}", worst <= 10)
    per_1000 = first.cpu / subscriptions * 1000
    line("full sync CPU under 0.03 s per 1,000 subscriptions", f"{per_1000:.3f} s", per_1000 < 0.03)
    peak = max(m.hwm for m in polls)
    limit = next((mib for size, mib in ((100_000, 100), (1_000_000, 400))
                  if 0.8 * size <= subscriptions <= 1.2 * size), None)
    line("VmHWM under 100 MiB at 100,000 (400 MiB at 1,000,000)", f"{peak:.0f} MiB",
         None if limit is None else peak < limit)
    if first.latencies:
        ms = [x * 1000 for x in first.latencies]
        p99, worst_ms = percentile(ms, 99), max(ms)
        line("scrapes during the full sync: p99 under 10 ms, none over 50",
             f"p99 {p99:.1f} ms, max {worst_ms:.1f} ms", p99 < 10 and worst_ms <= 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=87_000)
    parser.add_argument("--copies", type=int, default=1,
                        help="serve this many copies of the company (10: 1M subscriptions "
                             "from 87,000 customers)")
    parser.add_argument("--steady-polls", type=int, default=1)
    parser.add_argument("--untuned", action="store_true",
                        help="CPython's default GIL switch interval and no gc.freeze() "
                             "during and after polls, to compare with what `serve` does "
                             "(exporter/runtime.py)")
    args = parser.parse_args()

    now = int(time.time())
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(
        target=serve_company, args=(args.customers, args.copies, now, theirs), daemon=True)
    child.start()
    url, api_key, subscriptions, generated = ours.recv()
    copies = f" in {args.copies} copies" if args.copies > 1 else ""
    print(f"simulated company: {args.customers} customers{copies}, {subscriptions} "
          f"subscriptions, generated in {generated:.0f} s")
    try:
        config = StripeConfig(api_key=Secret(api_key), base_url=url, rate_limit=None)
        source = StripeSource(config, FX)
        poller = Poller([source])
        if not args.untuned:  # as Exporter.run_until_signal does
            runtime.tune_for_serving()
            poller.after_poll = runtime.HeapFreezer().start().freeze
        registry = CollectorRegistry()
        kpis = KpiCollector(poller)
        registry.register(kpis)
        server = BackgroundHttpServer("127.0.0.1", 0, make_app(  # as Exporter wires them
            registry, poller, metrics_app=MetricsApp(kpis)), inline=True).start()
        print(f"before polling: VmHWM {vm_hwm_mib():.0f} MiB")
        exporter_url = f"http://127.0.0.1:{server.port}"
        first = measured_poll("first poll", poller, source, exporter_url, subscriptions)
        polls = [first]
        while not polls[-1].history:  # the month of events, then the year of invoices
            polls.append(measured_poll(f"history poll {len(polls)}", poller, source,
                                       exporter_url, subscriptions))
        steady = [measured_poll(f"steady poll {n + 1}", poller, source, exporter_url,
                                subscriptions) for n in range(args.steady_polls)]
        server.stop()
        print_goals(subscriptions, first, polls + steady, steady)
    finally:
        ours.send("stop")
        child.join(30)


if __name__ == "__main__":
    main()
