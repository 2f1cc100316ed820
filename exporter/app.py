"""Wire a Config into a running exporter: sources, poller, collector, HTTP server."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import runtime
from exporter.collector import KpiCollector
from exporter.config import Config, listen_text
from exporter.exposition import MetricsApp
from exporter.poller import Poller
from exporter.secrets import RedactingFilter
from exporter.server import BackgroundHttpServer, make_app
from exporter.sources import SOURCE_TYPES
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)


class Exporter:
    def __init__(self, config: Config, listen: tuple[str, int] | None = None,
                 web: WebConfig | None = None):
        self.config = config
        self.sources = [named(SOURCE_TYPES[config.source_type(name)].create(source_config, config),
                              name) for name, source_config in config.sources.items()]
        self.poller = Poller(self.sources)
        kpis = KpiCollector(self.poller, config.kpis, config.reporting_currency, config.constants)
        self.registry = CollectorRegistry()  # everything, as /metrics serves it
        self.registry.register(kpis)
        # What any exporter serves about itself: CPU, memory, file descriptors, GC.
        itself = [ProcessCollector(registry=self.registry),
                  PlatformCollector(registry=self.registry), GCCollector(registry=self.registry)]
        host, port = listen or config.listen
        self.web = web
        app = make_app(self.registry, self.poller, web.allows if web and web.users else None,
                       metrics_app=MetricsApp(kpis, itself))
        self.server = BackgroundHttpServer(host, port, app, tls=web.tls if web else None,
                                           headers=web.headers if web else (),
                                           inline=not (web and web.users))

    @property
    def url(self) -> str:
        return f"{self.server.scheme}://{listen_text(self.server.host, self.server.port)}"

    def start(self) -> "Exporter":
        self.server.start()
        self.poller.start()
        names = ", ".join(s.name for s in self.sources) or "none"
        secured = " with basic auth" if self.web and self.web.users else ""
        log.info("serving %s/metrics%s (sources: %s)", self.url, secured, names)
        return self

    def stop(self) -> None:
        self.poller.stop()
        self.server.stop()

    def run_until_signal(self) -> None:
        """Run as the process's one job (`serve`, `demo`): tuned to answer scrapes
        promptly while polls compute (see runtime.py)."""
        runtime.tune_for_serving()
        freezer = runtime.HeapFreezer().start()
        self.poller.after_poll = freezer.freeze
        self.start()
        wait_for_signal()
        log.info("shutting down")
        self.stop()


def named(source, name: str):
    """The source under its name in the config (`stripe_eu`): its health series, its
    poll thread, its `source` label (the poller relabels its samples) and its HTTP
    errors carry it."""
    source.name = name
    client = getattr(source, "client", None)
    if client is not None:
        client.source = name
    return source


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (Ctrl-C, `docker stop`)."""
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3 logs full request lines at DEBUG; keep it at WARNING.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
