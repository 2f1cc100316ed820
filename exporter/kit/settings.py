"""What the generated kit assumes about the user's deployment: the `kit:` section.

The mixin `_config` of this project: the scrape job every expression selects,
where Grafana and the runbooks live, and where each team's alerts go. Every
field has a default, so an empty `kit:` (or none) gives the kit the repository
commits: PagerDuty and Slack per team, with the secrets in files under
/etc/alertmanager/secrets.

    kit:
      job: biz-kpis
      grafana_url: https://grafana.example.com
      runbook_url: https://wiki.example.com/kpi-runbooks
      alertmanager_global: {smtp_smarthost: smtp.example.com:587, smtp_from: kpi@example.com}
      default: {slack_configs: [{channel: "#kpi-alerts", api_url_file: /etc/...}]}
      digest: {email_configs: [{to: kpi-digest@example.com}]}
      teams:
        finance:
          critical: {pagerduty_configs: [{routing_key_file: /etc/...}]}
          warning: {email_configs: [{to: finance@example.com}]}

Receiver bodies are Alertmanager's own format, passed through: any integration
it supports. Secrets must sit in `*_file` fields: a body with a secret inline
is a config error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # config.py imports this module for KitSettings
    from exporter.config import Section

DEFAULT_JOB = "kpi-exporter"
DEFAULT_RUNBOOK_URL = "https://github.com/kpi-exporter/kpi-exporter/blob/main/docs/runbooks.md"
DEFAULT_GRAFANA_URL = "http://localhost:3000"
# Severities a team routes itself; info alerts go to the daily digest.
TEAM_SEVERITIES = ("critical", "warning")
# Health alerts belong to engineering even where no KPI names that team.
TEAMS_ALWAYS = ("engineering",)
TEAM_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")
# A job name that sits unquoted-safe in PromQL strings, Grafana variables and URLs.
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}")
# Receiver fields that hold a secret; each has a `<name>_file` twin in Alertmanager.
SECRET_FIELDS = frozenset({
    "api_url", "routing_key", "service_key", "auth_password", "auth_secret", "api_key",
    "api_secret", "user_key", "token", "bot_token", "webhook_url", "password", "credentials",
    "bearer_token", "secret_key", "client_secret", "slack_api_url", "smtp_auth_password",
    "opsgenie_api_key", "victorops_api_key", "wechat_api_secret", "telegram_bot_token",
    "webex_api_url"})

Body = dict[str, Any]  # an Alertmanager receiver without its name
# A PromQL vector selector: a metric name and/or {matchers}, nothing more.
SELECTOR = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})?|\{[^{}]+\}')


@dataclass(frozen=True)
class Availability:
    """A 0/1 probe per target (blackbox exporter's probe_success)."""

    probe: str
    objective: float = 0.999  # over 30 days: the documented uptime >= 99.9 %


@dataclass(frozen=True)
class Requests:
    """The application's request counter (all, and the errors) and latency histogram."""

    total: str
    errors: str
    latency_histogram: str | None = None  # its _bucket series
    error_objective: float = 0.999  # the documented error rate < 0.1 %
    latency_p95_target: float = 0.5  # seconds: the documented p95 < 500 ms
    latency_p95_warning: float = 2.0  # seconds: the documented alarm, over 2 s for 10 minutes


@dataclass(frozen=True)
class Platform:
    """`kit.platform`: the SLOs of the platform beside the business KPIs."""

    availability: Availability | None = None
    requests: Requests | None = None


# Without `kit.platform`: the selectors the demo serves (a blackbox-style probe job
# and an application job), which are also the conventional names.
EXAMPLE_PLATFORM = Platform(
    Availability('probe_success{job="blackbox"}'),
    Requests('http_requests_total{job="api"}', 'http_requests_total{job="api",code=~"5.."}',
             'http_request_duration_seconds_bucket{job="api"}'))


@dataclass(frozen=True)
class KitSettings:
    # The scrape job of the exporter: every generated expression selects it.
    job: str = DEFAULT_JOB
    # Grafana's address, for each alert's dashboard link.
    grafana_url: str = DEFAULT_GRAFANA_URL
    # Where the runbooks live; each alert links to <runbook_url>#<alertname in lower case>.
    runbook_url: str = DEFAULT_RUNBOOK_URL
    # Alertmanager's `global:` block; None: the example one (SMTP and PagerDuty).
    alertmanager_global: dict[str, Any] | None = None
    # Receiver bodies: for anything unrouted, for the daily digest of info alerts
    # (None: the default one), and per team and severity. None: the example routing.
    default: Body | None = None
    digest: Body | None = None
    teams: dict[str, dict[str, Body]] | None = None
    # Extra fields of the generated scrape job (scheme, tls_config, basic_auth...), as
    # Prometheus writes them: how it reaches an exporter behind TLS and basic auth.
    scrape: dict[str, Any] | None = None
    # The platform SLOs (availability, requests); `platform: {}` for none.
    platform: Platform = EXAMPLE_PLATFORM
    # How long a KPI threshold must stay broken before its alert fires, unless
    # the threshold says otherwise: twice the default (5m) poll interval, so one
    # odd poll pages nobody; critical ones sooner ("critical now, warning within hours").
    kpi_for: tuple[tuple[str, str], ...] = (("critical", "10m"), ("warning", "30m"), ("info", "1h"))
    # A source that has failed this long has missed several polls.
    source_down_for: str = "15m"
    # The shortest staleness that alerts, whatever the poll interval.
    stale_floor_seconds: int = 900

    @property
    def job_selector(self) -> str:
        return f'job="{self.job}"'


def parse_kit(section: Section, teams_in_use: set[str]) -> KitSettings:
    """The `kit:` section; `teams_in_use`: the teams the (overridden) catalog names."""
    job = section.string("job", DEFAULT_JOB).strip()
    if not JOB_NAME.fullmatch(job):
        raise section.error("job", f"{job!r} is not a job name Prometheus, Grafana and URLs "
                            "can all carry: letters, digits and _ . : / -")
    settings = KitSettings(
        job=job,
        grafana_url=_url(section, "grafana_url", DEFAULT_GRAFANA_URL),
        runbook_url=_url(section, "runbook_url", DEFAULT_RUNBOOK_URL),
        alertmanager_global=_global(section) if section.has("alertmanager_global") else None,
        default=_body(section, "default") if section.has("default") else None,
        digest=_body(section, "digest") if section.has("digest") else None,
        teams=_teams(section, teams_in_use | set(TEAMS_ALWAYS)) if section.has("teams") else None,
        scrape=_scrape(section) if section.has("scrape") else None,
        platform=_platform(section.section("platform")) if "platform" in section.data
        else EXAMPLE_PLATFORM,
    )
    section.finish()
    return settings


def _url(section: Section, name: str, default: str) -> str:
    value = section.string(name, default).strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise section.error(name, f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def _global(section: Section) -> dict[str, Any]:
    value = section.raw("alertmanager_global")
    if not isinstance(value, dict):
        raise section.error("alertmanager_global", "must be a mapping: Alertmanager's own "
                            "`global:` block")
    _no_inline_secrets(section, section.key("alertmanager_global"), value)
    return value


def _platform(section: Section) -> Platform:
    def selector(entry: Section, name: str, required: bool = True) -> str | None:
        value = entry.string(name, required=required)
        if value is not None and not SELECTOR.fullmatch(value.strip()):
            raise entry.error(name, f"{value!r} is not a PromQL series selector "
                              '(metric{label="value"})')
        return None if value is None else value.strip()

    def objective(entry: Section, name: str, default: float) -> float:
        value = entry.number(name, default)
        if not 0 < value < 1:
            raise entry.error(name, "must be between 0 and 1 (0.999 for 99.9 %)")
        return value

    availability = requests = None
    if section.has("availability"):
        entry = section.section("availability")
        availability = Availability(selector(entry, "probe"),
                                    objective(entry, "objective", Availability.objective))
        entry.finish()
    if section.has("requests"):
        entry = section.section("requests")
        requests = Requests(
            selector(entry, "total"), selector(entry, "errors"),
            selector(entry, "latency_histogram", required=False),
            objective(entry, "error_objective", Requests.error_objective),
            entry.duration("latency_p95_target", Requests.latency_p95_target),
            entry.duration("latency_p95_warning", Requests.latency_p95_warning))
        entry.finish()
    section.finish()
    return Platform(availability, requests)


# What the kit writes into the scrape job itself; the rest of Prometheus' scrape_config
# fields pass through.
SCRAPE_OWN = frozenset({"job_name", "static_configs"})


def _scrape(section: Section) -> dict[str, Any]:
    value = section.raw("scrape")
    if not isinstance(value, dict):
        raise section.error("scrape", "must be a mapping of Prometheus scrape_config fields "
                            "(scheme, tls_config, basic_auth, ...)")
    for key in value:
        if key in SCRAPE_OWN:
            raise section.error_at(f"{section.key('scrape')}.{key}", "the kit sets this one "
                                   "itself (kit.job names the job)")
    _no_inline_secrets(section, section.key("scrape"), value)
    return value


def _body(section: Section, name: str) -> Body:
    """One receiver body: `<integration>_configs` lists of mappings, no `name`."""
    value = section.raw(name)
    where = section.key(name)
    if not isinstance(value, dict) or not value:
        raise section.error_at(where, "must be an Alertmanager receiver body, a mapping such "
                               "as {slack_configs: [...]}")
    for key, configs in value.items():
        if not str(key).endswith("_configs"):
            raise section.error_at(f"{where}.{key}", "not a receiver integration: keys end in "
                                   "_configs (slack_configs, pagerduty_configs, email_configs...)"
                                   + ("; the kit names receivers itself" if key == "name" else ""))
        if not isinstance(configs, list) or not configs \
                or not all(isinstance(c, dict) for c in configs):
            raise section.error_at(f"{where}.{key}", "must be a list of mappings")
    _no_inline_secrets(section, where, value)
    return value


def _teams(section: Section, known: set[str]) -> dict[str, dict[str, Body]]:
    teams_section = section.section("teams")
    result: dict[str, dict[str, Body]] = {}
    for team in list(teams_section.data):
        if team not in known:
            raise teams_section.error(str(team), "no KPI or alert belongs to this team (teams: "
                                      f"{', '.join(sorted(known))}); give a KPI to it with "
                                      f"kpis: {{<kpi>: {{team: {team}}}}}")
        severities = teams_section.section(team)
        for severity in list(severities.data):
            if severity not in TEAM_SEVERITIES:
                hint = "; info alerts go to kit.digest" if severity == "info" else ""
                raise severities.error(str(severity), "unknown severity (a team routes "
                                       f"{' and '.join(TEAM_SEVERITIES)}){hint}")
            result.setdefault(team, {})[severity] = _body(severities, severity)
        severities.finish()
    teams_section.finish()
    return result


def _no_inline_secrets(section: Section, where: str, node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}"
            if key in SECRET_FIELDS and isinstance(value, str) and value:
                raise section.error_at(path, f"a secret written inline: put it in a file and "
                                       f"give {key}_file, so it never sits in the config")
            _no_inline_secrets(section, path, value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _no_inline_secrets(section, f"{where}[{index}]", value)


def team_error(name: str) -> str | None:
    """Why `name` cannot be a team (it names receivers and label values), or None."""
    if not isinstance(name, str) or not TEAM_NAME.fullmatch(name):
        return (f"{name!r} is not a team name: lower-case letters, digits, - and _, "
                "starting with a letter")
    return None
