"""A simulated application for the demo's platform SLOs: request metrics and a probe.

    app = FakeApplication(outage=False)
    app.metrics()   # /metrics: http_requests_total{code}, http_request_duration_seconds
    app.probe()     # /probe: probe_success, as a blackbox exporter answers

Steady traffic inside the documented objectives: 20 requests a second, 0.05 %
of them failing (the objective allows 0.1 %), a 95th percentile latency under
500 ms, and a probe that always succeeds. With `outage=True` (the api-outage
scenario), from the moment the demo starts: the probe fails, half the requests
fail, and the 95th percentile is over 2 s.

The counters follow from the time since the start, so every scrape is
consistent with the last (a counter never goes back).
"""

from __future__ import annotations

import time
from typing import Callable

RATE = 20.0  # requests a second
ERROR_SHARE = {False: 0.0005, True: 0.5}
# The latency distribution: the share of requests at most this many seconds.
LATENCY = {False: ((0.05, 0.30), (0.1, 0.55), (0.25, 0.80), (0.5, 0.965), (1, 0.99),
                   (2, 0.998), (5, 1.0)),
           True: ((0.05, 0.05), (0.1, 0.10), (0.25, 0.20), (0.5, 0.40), (1, 0.60),
                  (2, 0.80), (5, 1.0))}


class FakeApplication:
    def __init__(self, *, outage: bool = False, clock: Callable[[], float] = time.time):
        self.outage = outage
        self.clock = clock
        self.started = clock()

    def metrics(self) -> str:
        elapsed = max(0.0, self.clock() - self.started)
        total = int(RATE * elapsed)
        # A steady share, not whole requests: at 20 a second one error in 2,000 comes
        # every 100 s, and a young Prometheus whose first minutes hold one of them sees
        # far more than 0.05 % (the slow burn-rate alert's windows are all it has).
        errors = total * ERROR_SHARE[self.outage]
        lines = ["# HELP http_requests_total Requests answered, by status code.",
                 "# TYPE http_requests_total counter",
                 f'http_requests_total{{code="200",method="GET"}} {float(total - errors)!r}',
                 f'http_requests_total{{code="500",method="GET"}} {float(errors)!r}',
                 "# HELP http_request_duration_seconds How long requests took.",
                 "# TYPE http_request_duration_seconds histogram"]
        for bound, share in LATENCY[self.outage]:
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound:g}"}} '
                         f"{int(total * share)}")
        lines += [f'http_request_duration_seconds_bucket{{le="+Inf"}} {total}',
                  f"http_request_duration_seconds_count {total}",
                  f"http_request_duration_seconds_sum {total * (2.0 if self.outage else 0.15):.3f}"]
        return "\n".join(lines) + "\n"

    def probe(self) -> str:
        return ("# HELP probe_success Whether the probe succeeded.\n"
                "# TYPE probe_success gauge\n"
                f"probe_success {0 if self.outage else 1}\n"
                "# HELP probe_duration_seconds How long the probe took.\n"
                "# TYPE probe_duration_seconds gauge\n"
                f"probe_duration_seconds {5.0 if self.outage else 0.08}\n")

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        body = {"/metrics": self.metrics, "/probe": self.probe}.get(path)
        if body is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
        return [body().encode()]
