"""The `kpi-exporter` command.

Every option can also come from the environment: KPI_EXPORTER_<COMMAND>_<OPTION>,
for example KPI_EXPORTER_SERVE_CONFIG=/etc/kpi-exporter.yml.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from exporter import __version__, config as config_module
from exporter.secrets import redact

# Kept in step with exporter.simulator.SCENARIOS by a test; listed here so that
# `--help` does not import the simulator.
SCENARIO_NAMES = ("api-outage", "calm", "csat-drop", "email-deliverability",
                  "engagement-drop", "large-churn", "payment-failures", "pipeline-slump",
                  "support-spike")

CONTEXT = {"auto_envvar_prefix": "KPI_EXPORTER", "show_default": True,
           "help_option_names": ["-h", "--help"]}


def _listen(ctx, param, value):
    if value is None:
        return None
    try:
        return config_module.parse_listen(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


listen_option = click.option(
    "--listen", metavar="HOST:PORT", callback=_listen,
    help=f"Address to serve /metrics on; overrides `listen` in the config "
         f"(default {config_module.DEFAULT_LISTEN}).")
web_config_option = click.option(
    "--web-config-file", metavar="PATH",
    help="TLS and basic auth for the endpoints, in the exporter-toolkit format (see README's "
         "Security); overrides `web_config_file` in the config.")
log_level_option = click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
    help="Log verbosity.")


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="kpi-exporter")
def main():
    """Serve business KPIs as Prometheus metrics: revenue (Stripe), email (Mailgun), sales
    (HubSpot, Salesforce) and support (Zendesk, Intercom), with the alert rules, Alertmanager
    routing and Grafana dashboards that go with them."""


@main.command()
@click.option("--config", required=True, metavar="PATH",
              help="YAML config file (see README).")
@listen_option
@web_config_option
@log_level_option
def serve(config, listen, web_config_file, log_level):
    """Poll the configured sources and serve their KPIs."""
    config_path = config  # each option's name is its environment variable's
    from exporter.app import Exporter, setup_logging

    setup_logging(log_level)
    config = _load_config(config_path)
    web = _web_config(web_config_file or config.web_config_file)
    _run(lambda: Exporter(config, listen, web))


def _load_config(path: str):
    """The config, or exit 2 with one line naming the file and the key."""
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        click.echo(f"kpi-exporter: config error: {redact(str(exc))}", err=True)
        sys.exit(2)


def _web_config(path: str | None):
    """The web config (TLS, basic auth), or None; a bad one exits 2 in one line."""
    if path is None:
        return None
    from exporter import webconfig
    try:
        return webconfig.load(path)
    except config_module.ConfigError as exc:
        click.echo(f"kpi-exporter: web config error: {redact(str(exc))}", err=True)
        sys.exit(2)


@main.command()
@listen_option
@click.option("--scenario", default="calm", type=click.Choice(sorted(SCENARIO_NAMES)),
              help="calm: every KPI inside its thresholds; payment-failures: a card "
                   "processor outage; large-churn: the largest customer just left; "
                   "email-deliverability: a sending domain's mail stops getting through; "
                   "pipeline-slump: fewer and worse leads; support-spike: a flood of "
                   "tickets; csat-drop: customers rate support badly; engagement-drop: "
                   "users go quiet; api-outage: the simulated application is down.")
@click.option("--customers", default=500, type=click.IntRange(1, 100_000),
              help="Size of the simulated company.")
@click.option("--seed", default=9, type=int, help="Random seed of the simulated company.")
@click.option("--poll-interval", default="30s", help="How often the exporter polls the simulator.")
@click.option("--app-listen", metavar="HOST:PORT", default="127.0.0.1:19879", callback=_listen,
              help="Where the simulated application serves its request metrics (/metrics) "
                   "and probe (/probe), for the platform SLOs.")
@web_config_option
@log_level_option
def demo(listen, scenario, customers, seed, poll_interval, app_listen, web_config_file,
         log_level):
    """Run the exporter against a built-in simulator: no accounts needed."""
    from exporter.app import setup_logging
    from exporter.demo import DemoExporter

    setup_logging(log_level)
    try:
        interval = config_module.parse_duration(poll_interval)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--poll-interval") from None
    web = _web_config(web_config_file)
    _run(lambda: DemoExporter(listen=listen, customers=customers, seed=seed,
                              poll_interval=interval, scenario=scenario, web=web,
                              app_listen=app_listen))


@main.command()
@click.option("--config", metavar="PATH", help="YAML config file (see README).")
@click.option("--demo", is_flag=True, help="Backfill the built-in simulator instead (what the "
              "compose stack does before Prometheus first starts).")
@click.option("--days", default=365.0, type=click.FloatRange(min=0, min_open=True),
              show_default=True, help="How far back.")
@click.option("--step", default="1d", show_default=True,
              help="Time between samples, a Prometheus duration; samples fall on whole steps "
                   "(midnight UTC for 1d), the last one now.")
@click.option("--out", required=True, metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The OpenMetrics file to write, for `promtool tsdb create-blocks-from "
                   "openmetrics`.")
@click.option("--blocks", metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Then turn the file into blocks of Prometheus' storage in DIR (its "
                   "--storage.tsdb.path) with promtool, and leave a marker there: a later "
                   "run with the same DIR does nothing (a one-shot service at every start).")
@click.option("--job", help="The job label the live scrape gives the series. "
              "[default: kit.job of the config]")
@click.option("--instance", help="The instance label the live scrape gives them: the "
              "address Prometheus scrapes. [default: the config's listen address]")
@log_level_option
def backfill(config, demo, days, step, out, blocks, job, instance, log_level):
    """Write the KPIs of the past as OpenMetrics, for Prometheus' own storage."""
    config_path, out_path, blocks_dir = config, out, blocks
    import time

    from exporter import backfill as backfill_module
    from exporter.app import Exporter, setup_logging
    from exporter.http import UpstreamError
    from exporter.sources.base import UpstreamDataError

    setup_logging(log_level)
    if demo == bool(config_path):
        raise click.UsageError("give --config PATH or --demo")
    try:
        seconds = config_module.parse_duration(step)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--step") from None
    marker = blocks_dir / backfill_module.MARKER if blocks_dir else None
    if marker is not None and marker.exists():
        click.echo(f"kpi-exporter: {blocks_dir} was backfilled already ({marker.name}): "
                   "nothing to do", err=True)
        return
    promtool = _promtool("backfill --blocks") if blocks_dir is not None else None
    if demo:
        from exporter.demo import DemoExporter
        exporter = DemoExporter(listen=("127.0.0.1", 0))
    else:
        config = _load_config(config_path)
        exporter = Exporter(config, listen=("127.0.0.1", 0))
    config = exporter.config
    job = job or config.kit.job
    host, port = config.listen if not demo else config_module.parse_listen(
        config_module.DEFAULT_LISTEN)
    instance = instance or config_module.listen_text(host, port)
    moments = backfill_module.steps(int(time.time()), days, seconds)
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        able = sum(hasattr(s, "backfill") for s in exporter.sources)
        with partial.open("w", encoding="utf-8") as out, \
                backfill_module.progress(able, len(moments)) as progress:
            written = backfill_module.run(exporter.sources, config.kpis, moments, out,
                                          job=job, instance=instance, progress=progress)
        partial.replace(out_path)  # only a whole backfill replaces the file
    except (UpstreamError, UpstreamDataError, OSError) as exc:
        partial.unlink(missing_ok=True)
        click.echo(f"kpi-exporter: backfill failed: {redact(str(exc))}", err=True)
        sys.exit(1)
    finally:
        exporter.stop()
    summary = ", ".join(f"{name} {count}" for name, count in written.items()) or "none"
    click.echo(f"kpi-exporter: wrote {out_path} (steps per source: {summary}; "
               f"job={job!r}, instance={instance!r})", err=True)
    if blocks_dir is not None:
        blocks_dir.mkdir(parents=True, exist_ok=True)
        _create_blocks(promtool, out_path, blocks_dir, "backfill")
        marker.write_text(backfill_module.marker_text(str(out_path), moments))
        click.echo(f"kpi-exporter: blocks written to {blocks_dir}", err=True)


def _promtool(command: str) -> str:
    """promtool's path, or exit 1 saying `command` needs it."""
    import shutil

    found = shutil.which("promtool")
    if found is None:
        click.echo(f"kpi-exporter: {command} needs promtool (Prometheus' own tool) on the PATH",
                   err=True)
        sys.exit(1)
    return found


def _create_blocks(promtool: str, openmetrics_file: Path, blocks: Path, command: str) -> None:
    """`promtool tsdb create-blocks-from openmetrics` into `blocks`, or exit 1 with its error."""
    import subprocess

    made = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics",
                           str(openmetrics_file), str(blocks)], capture_output=True, text=True)
    if made.returncode != 0:
        click.echo(f"kpi-exporter: {command}: promtool failed: "
                   f"{(made.stderr or made.stdout).strip()[-500:]}", err=True)
        sys.exit(1)


@main.command("backfill-rules")
@click.option("--blocks", required=True, metavar="DIR",
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Prometheus' data directory, which `backfill --blocks` filled (its marker "
                   "gives the steps).")
@click.option("--url", default="http://localhost:9090", metavar="URL",
              help="The Prometheus that serves DIR.")
@click.option("--rules", required=True, multiple=True, metavar="PATH",
              type=click.Path(exists=True, path_type=Path),
              help="A rule file, or a directory of them; repeatable.")
@click.option("--wait", default="5m", help="How long to wait for Prometheus to be ready.")
@log_level_option
def backfill_rules(blocks, url, rules, wait, log_level):
    """Give the recording rules the backfill's past: evaluate them at its steps, into DIR."""
    rule_paths = rules  # the parameter's name is the environment's: ..._RULES_RULES
    import requests
    import yaml

    from exporter import backfill_rules as rules_module
    from exporter.app import setup_logging

    setup_logging(log_level)
    marker = blocks / rules_module.RULES_MARKER
    if marker.exists():
        click.echo(f"kpi-exporter: {blocks} has its recording rules' past already "
                   f"({marker.name}): nothing to do", err=True)
        return
    promtool = _promtool("backfill-rules")
    try:
        moments = rules_module.steps_of(blocks)
    except FileNotFoundError as exc:  # no backfill (skipped, or another kind of volume)
        click.echo(f"kpi-exporter: {exc}: nothing to do", err=True)
        return
    except LookupError as exc:
        click.echo(f"kpi-exporter: backfill-rules failed: {exc}", err=True)
        sys.exit(1)
    try:
        rules = rules_module.recording_rules(list(rule_paths))
        url = url.rstrip("/")
        rules_module.wait_ready(url, config_module.parse_duration(wait))
        recorded: dict = {}
        for rule in rules:
            for labels, points in rules_module.evaluate(url, rule, moments).items():
                recorded.setdefault(rule["record"], {}).setdefault(labels, []).extend(points)
    except (ValueError, TimeoutError, RuntimeError, OSError, yaml.YAMLError,
            requests.RequestException) as exc:
        click.echo(f"kpi-exporter: backfill-rules failed: {redact(str(exc))}", err=True)
        sys.exit(1)
    out = blocks / "kpi-exporter-rules-backfill.om"
    out.write_text("".join(rules_module.openmetrics(recorded)), encoding="utf-8")
    _create_blocks(promtool, out, blocks, "backfill-rules")
    marker.write_text(f"{out}\n")
    series = sum(len(by_labels) for by_labels in recorded.values())
    click.echo(f"kpi-exporter: {len(recorded)} of {len(rules)} recording rules backfilled "
               f"({series} series) into {blocks}; Prometheus loads the blocks within a "
               "minute", err=True)


@main.command()
@click.option("--config", required=True, metavar="PATH",
              help="YAML config file (see README).")
def check(config):
    """Run every query of the sql source once: one line per query, exit 2 if any failed."""
    config_path = config
    from exporter.sources.sql.source import SqlSource

    config = _load_config(config_path)
    if "sql" not in config.sources:
        click.echo("no sql source in the config: nothing to check")
        return
    source = SqlSource(config.sources["sql"])
    try:
        results = source.check()
    finally:
        source.close()
    for name, failure in results:
        click.echo(f"{name}: ok" if failure is None else redact(f"{name}: FAILED: {failure}"))
    if not results:
        click.echo("the sql source has no queries (product, nps or custom_kpis)")
    if any(failure for _, failure in results):
        sys.exit(2)


@main.command("alert-sink")
@click.option("--listen", metavar="HOST:PORT", default="127.0.0.1:19878", callback=_listen,
              help="Address to receive Alertmanager's webhooks on (POST /alerts).")
@log_level_option
def alert_sink(listen, log_level):
    """Receive Alertmanager's notifications and log them (the demo stack's receiver)."""
    from exporter.alert_sink import serve
    from exporter.app import setup_logging, wait_for_signal

    setup_logging(log_level)
    try:
        _, server = serve(*listen)
    except OSError as exc:
        click.echo(f"kpi-exporter: cannot listen: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"alert sink: POST http://{listen[0]}:{server.port}/alerts", err=True)
    wait_for_signal()
    server.stop()


def _run(build) -> None:
    try:
        exporter = build()
    except OSError as exc:  # typically the port is taken
        click.echo(f"kpi-exporter: cannot listen: {exc.strerror or exc}", err=True)
        sys.exit(1)
    exporter.run_until_signal()


@main.command()
@click.option("--config", metavar="PATH",
              help="Your config: its `kpis:` (targets, thresholds, owners) and `kit:` (job, "
                   "URLs, receivers) instead of the defaults.")
@click.option("--out", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Write the kit (alert rules, Prometheus and Alertmanager configs, "
                   "dashboards) under DIR, in the repository's layout, instead of rewriting "
                   "the repository's committed copies and README.")
@click.option("--check", is_flag=True, help="Exit 1 if a file is out of date instead of writing.")
def generate(config, out, check):
    """Regenerate what derives from the KPI catalog and the kit config: rules, routing,
    scrape config, dashboards, README tables."""
    config_path, out_dir = config, out
    from exporter import catalog
    from exporter.kit.generate import kit_files, repo_files, write_all
    from exporter.kit.settings import KitSettings

    kpis, currency, kit = catalog.KPIS, config_module.DEFAULT_REPORTING_CURRENCY, KitSettings()
    if config_path:
        config = _load_config(config_path)
        kpis, currency, kit = config.kpis, config.reporting_currency, config.kit
    if out_dir is None:
        root = Path(".")
        try:
            files = repo_files((root / "README.md").read_text(encoding="utf-8"), kpis,
                               currency, kit)
        except (OSError, ValueError):  # no README here, or not ours (no generated sections)
            click.echo("kpi-exporter: generate: this is not a kpi-exporter checkout (no README.md "
                       "with generated sections here): give --out DIR to write the kit "
                       "elsewhere", err=True)
            sys.exit(2)
    else:
        root = out_dir
        files = kit_files(kpis, currency, kit)
    if check:
        stale = [relative for relative, text in sorted(files.items())
                 if not (root / relative).is_file()
                 or (root / relative).read_text(encoding="utf-8") != text]
        if stale:
            click.echo(f"out of date: {', '.join(stale)}; run `kpi-exporter generate`", err=True)
            sys.exit(1)
        return
    try:
        written = write_all(root, files)
        if out_dir is not None:  # where the stack mounts the Alertmanager secrets
            (root / "provisioning" / "alertmanager" / "secrets").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"kpi-exporter: generate: cannot write {exc.filename or root}: "
                   f"{exc.strerror or exc}; nothing was changed", err=True)
        sys.exit(1)
    for relative in written:
        click.echo(f"wrote {root / relative}")
