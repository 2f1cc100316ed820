"""Load and validate the YAML config.

Every problem becomes a `ConfigError` whose message is one line naming the
file and the key ("config.yaml: sources.stripe.poll_interval: ..."); the CLI
prints it and exits with status 2. `${VAR}` and `${VAR:-default}` in any string
are replaced from the environment before validation.

Sources validate their own section through `Section`, which tracks the key
path for error messages and refuses keys nobody read.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable
from urllib.parse import urlsplit

import yaml

from exporter import catalog
from exporter.kit.settings import KitSettings, parse_kit, team_error
from exporter.secrets import Secret

DEFAULT_LISTEN = "127.0.0.1:19877"
DEFAULT_REPORTING_CURRENCY = "usd"
TOP_LEVEL = "(top level)"  # the "key" of errors about the whole file


class ConfigError(Exception):
    def __init__(self, file: str, key: str, message: str):
        super().__init__(f"{file}: {key}: {message}")
        self.file = file
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Config:
    file: str
    listen: tuple[str, int]
    reporting_currency: str
    fx_rates: dict[str, Decimal]
    sources: dict[str, Any]  # source name -> that source's own config object
    kpis: tuple[catalog.Kpi, ...] = field(default=catalog.KPIS)
    kit: KitSettings = field(default_factory=KitSettings)  # the `kit:` section
    web_config_file: str | None = None  # TLS and basic auth (exporter/webconfig.py)
    constants: dict[str, float] = field(default_factory=dict)  # `constants:`, by catalog key
    # source name -> its type, for sources not named after their type (`type:`)
    source_types: dict[str, str] = field(default_factory=dict)

    def source_type(self, name: str) -> str:
        return self.source_types.get(name, name)


# --- values -----------------------------------------------------------------


@dataclass(frozen=True)
class PollLimits:
    """What one poll of a source may spend before it fails (an upstream that pages
    for ever, or answers ever more slowly, must not hold the poll or hammer the API)."""

    max_requests: int = 10_000  # requests, retries included: generous for a large account
    timeout: float = 3600.0  # seconds, waits on rate limits included


# Prometheus' duration grammar (units largest first, each at most once: 1h30m,
# 1w, 90d, 1y = 365d), plus a single decimal with a unit (1.5h) or plain seconds.
_UNITS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_PROMETHEUS_DURATION = re.compile(
    "".join(rf"(?:(?P<{'milli' if unit == 'ms' else unit}>\d+){unit})?" for unit in _UNITS))
_DECIMAL_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)?")
DURATION_HINT = "use 30s, 5m, 1h30m, 1w, 90d or plain seconds"


def parse_duration(value: Any) -> float:
    """'30s', '5m', '1h30m', '1w', '90d', '1y', '250ms', '1.5h' or plain seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration: {DURATION_HINT}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        compound = _PROMETHEUS_DURATION.fullmatch(text)
        single = _DECIMAL_DURATION.fullmatch(text)
        if compound and text:
            seconds = float(sum(int(count) * _UNITS["ms" if name == "milli" else name]
                                for name, count in compound.groupdict().items() if count))
        elif single:
            seconds = float(single.group(1)) * _UNITS[single.group(2) or "s"]
        else:
            raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}")
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def parse_listen(value: Any) -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT' or ':PORT' (all interfaces)."""
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def listen_text(host: str, port: int) -> str:
    """parse_listen's inverse: 'HOST:PORT', an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def expand_env(text: str, environ: dict[str, str]) -> str:
    """Replace ${VAR} and ${VAR:-default}; '$$' is a literal '$'."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] or default is None):
            return environ[name]
        if default is not None:
            return default
        raise KeyError(name)

    return _ENV.sub(replace, text)


# --- sections ---------------------------------------------------------------


class Section:
    """A mapping in the config, read key by key with typed getters."""

    def __init__(self, file: str, path: str, data: Any, from_env: frozenset[str] = frozenset()):
        self.file = file
        self.path = path
        self.from_env = from_env  # keys whose value came from ${VAR} expansion
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.error_at(path, "must be a mapping")
        self.data = data
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error_at(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.file, key or TOP_LEVEL, message)

    def error(self, name: str, message: str) -> ConfigError:
        return self.error_at(self.key(name), message)

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def raw(self, name: str, default: Any = None) -> Any:
        self._read.add(name)
        value = self.data.get(name)
        return default if value is None else value

    def convert(self, name: str, default: Any, convert: Callable[[Any], Any]) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError, InvalidOperation) as exc:
            message = str(exc) or "invalid value"
            if self.key(name) in self.from_env:
                # The value may be a secret put in the wrong place: never echo it.
                message = f"the value from the environment is not valid here ({_kind(exc)})"
            raise self.error(name, message) from None

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        if required and not self.has(name):
            raise self.error(name, "is required")
        return self.convert(name, default, _as_string)

    def duration(self, name: str, default: float) -> float:
        return self.convert(name, default, parse_duration)

    def number(self, name: str, default: float | None, *, minimum: float | None = None) -> float | None:
        def convert(value: Any) -> float:
            number = _as_number(value)
            if minimum is not None and number < minimum:
                raise ValueError(f"must be at least {minimum:g}")
            return number

        return self.convert(name, default, convert)

    def count(self, name: str, default: int, *, minimum: int = 1) -> int:
        """A whole number (a cap, a limit) of at least `minimum`."""
        def convert(value: Any) -> int:
            number = _as_number(value)
            if number != int(number):
                raise ValueError("must be a whole number")
            if number < minimum:
                raise ValueError(f"must be at least {minimum}")
            return int(number)

        return self.convert(name, default, convert)

    def boolean(self, name: str, default: bool) -> bool:
        def convert(value: Any) -> bool:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value

        return self.convert(name, default, convert)

    def common(self, defaults: Any) -> dict[str, Any]:
        """What every source takes, read once here: `poll_interval`, `timeout`, the poll's
        bounds and, where the source has one, `rate_limit`. `defaults`: the source's
        config class; the result goes into it as keyword arguments."""
        found = {"poll_interval": self.duration("poll_interval", defaults.poll_interval),
                 "timeout": self.duration("timeout", defaults.timeout),
                 "limits": self.poll_limits(defaults.limits)}
        if hasattr(defaults, "rate_limit"):
            found["rate_limit"] = self.number("rate_limit", defaults.rate_limit, minimum=0.1)
        return found

    def url(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        """An http:// or https:// URL with a host, without its trailing slash."""
        def convert(value: Any) -> str:
            text = _as_string(value).strip()
            parts = urlsplit(text)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
            return text.rstrip("/")

        if required and not self.has(name):
            raise self.error(name, "is required")
        return self.convert(name, default, convert)

    def poll_limits(self, default: PollLimits) -> PollLimits:
        """`max_requests_per_poll` and `poll_timeout`, every source's bounds on one poll."""
        return PollLimits(self.count("max_requests_per_poll", default.max_requests),
                          self.duration("poll_timeout", default.timeout))

    def section(self, name: str) -> "Section":
        return Section(self.file, self.key(name), self.raw(name), self.from_env)

    def secret(self, name: str) -> Secret:
        """A secret given inline (usually from ${ENV}) or as `<name>_file`."""
        file_key = f"{name}_file"
        inline, from_file = self.has(name), self.has(file_key)
        if inline and from_file:
            raise self.error(name, f"give {name} or {file_key}, not both")
        if not inline and not from_file:
            raise self.error(name, f"is required (or {file_key})")
        if inline:
            value = self.string(name)
        else:
            path = self.string(file_key)
            try:
                with open(path, encoding="utf-8") as handle:
                    value = handle.read().strip()
            except OSError as exc:
                raise self.error(file_key, f"cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise self.error(file_key, f"{path} is not UTF-8 text") from None
            name = file_key
        if not value:
            raise self.error(name, "is empty")
        return Secret(value)

    def finish(self) -> None:
        """Refuse keys that no getter read: they are typos or unsupported."""
        unknown = sorted(set(self.data) - self._read, key=str)
        if unknown:
            raise self.error(str(unknown[0]), "unknown key")


def _kind(exc: Exception) -> str:
    """What a conversion expected, without the offending value."""
    text = str(exc)
    for expected in ("duration", "number", "HOST:PORT", "true or false", "string", "currency",
                     "URL"):
        if expected in text:
            return f"expected a {expected}" if expected != "true or false" else "expected true or false"
    return "invalid value"


def _as_string(value: Any) -> str:
    if isinstance(value, (dict, list, bool)):
        raise ValueError("must be a string")
    return str(value)


def _as_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None


# --- the whole file ---------------------------------------------------------


# What a config file may be: far more than any real config needs, far less than
# what would hang or crash the loader (a "billion laughs" of aliases, a document
# nested thousands deep).
MAX_CONFIG_BYTES = 1024 * 1024
MAX_DEPTH = 40
MAX_ALIASES = 100
MAX_NODES = 100_000


class _Refused(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested too deep or with too many aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name): write the values out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        # PyYAML keeps the last of a repeated key without a word: a silent override.
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise _Refused(f"line {key_node.start_mark.line + 1}: the key {key!r} "
                               "appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(file: str, environ: dict[str, str] | None = None) -> Config:
    return parse(read_text(file), file, os.environ if environ is None else environ)


def read_text(file: str) -> str:
    """A config file's text: a regular file, UTF-8, at most MAX_CONFIG_BYTES."""
    path = Path(file)
    try:
        if path.is_dir():
            raise ConfigError(file, TOP_LEVEL, "is a directory, not a config file")
        if path.exists() and not path.is_file():
            raise ConfigError(file, TOP_LEVEL, "is not a regular file")
        with open(file, "rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, TOP_LEVEL, f"cannot read config: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(file, TOP_LEVEL, f"is larger than {MAX_CONFIG_BYTES // 1024} KiB: "
                          "not a config file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(file, TOP_LEVEL, "the config is not UTF-8 text") from None


def parse_yaml(text: str, file: str) -> Any:
    """YAML through the bounded loader; every problem a one-line ConfigError."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader
    except _Refused as exc:
        raise ConfigError(file, TOP_LEVEL, f"refused: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else TOP_LEVEL
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(file, where, f"invalid YAML: {problem}") from None


def load_yaml(file: str) -> Any:
    """Any of our YAML files (the web config too), read the way the config is."""
    return parse_yaml(read_text(file), file)


def parse(text: str, file: str, environ: dict[str, str]) -> Config:
    data = parse_yaml(text, file)
    from_env: dict[str, str] = {}  # key path -> the value ${VAR} put there
    data = _expand_tree(data, file, "", environ, from_env, [0])
    try:
        return from_mapping(data, file, frozenset(from_env))
    except ConfigError as exc:
        raise _without_env_values(exc, from_env.values()) from None


def _without_env_values(error: ConfigError, values: Any) -> ConfigError:
    """The error with every value that came from the environment taken out: a variable
    put in the wrong field may hold a token, and errors end up in logs."""
    message = error.message
    for value in sorted(set(values), key=len, reverse=True):
        message = message.replace(repr(value), "the value from the environment")
        if len(value) >= 6:
            message = message.replace(value, "<the value from the environment>")
    return ConfigError(error.file, error.key, message)


def _expand_tree(node: Any, file: str, path: str, environ: dict[str, str],
                 from_env: dict[str, str], count: list[int]) -> Any:
    count[0] += 1
    if count[0] > MAX_NODES:  # aliases can make a small file a huge tree
        raise ConfigError(file, TOP_LEVEL, f"refused: more than {MAX_NODES} values")
    if isinstance(node, dict):
        return {k: _expand_tree(v, file, f"{path}.{k}" if path else str(k), environ, from_env,
                                count) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_tree(v, file, f"{path}[{i}]", environ, from_env, count)
                for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            expanded = expand_env(node, environ)
        except KeyError as exc:
            raise ConfigError(file, path, f"environment variable {exc.args[0]} is not set") from None
        if expanded != node:
            from_env[path] = expanded
        return expanded
    return node


def from_mapping(data: Any, file: str, from_env: frozenset[str] = frozenset()) -> Config:
    # Imported here: the source registry imports this module for Section.
    from exporter.sources.sql.config import parse_custom

    top = Section(file, "", data, from_env)
    listen = top.convert("listen", parse_listen(DEFAULT_LISTEN), parse_listen)
    currency = _currency(top, "reporting_currency", top.string("reporting_currency",
                                                                DEFAULT_REPORTING_CURRENCY))
    fx_rates = _fx_rates(top.section("fx_rates"), currency)

    sources, source_types = _sources(top)
    kpis = _kpi_overrides(top.section("kpis"))
    # The catalog opens: custom KPIs (queries of the sql source) and constants join it.
    custom = parse_custom(top, sources.get("sql"), kpis)
    if "sql" in sources:
        sources["sql"] = dataclasses.replace(sources["sql"], custom=tuple(custom.queries))
    kpis = kpis + tuple(custom.kpis)
    if any(kpi.key == "cac" for kpi in kpis):
        kpis += (catalog.LTV_TO_CAC,)
    kit = parse_kit(top.section("kit"), {kpi.team for kpi in kpis})
    web = top.string("web_config_file")
    if web is not None:  # relative to the config's own directory
        web = str(Path(file).resolve().parent / web) if not Path(web).is_absolute() else web
    top.finish()
    return Config(file=file, listen=listen, reporting_currency=currency, fx_rates=fx_rates,
                  sources=sources, kpis=kpis, kit=kit, web_config_file=web,
                  constants=custom.constants, source_types=source_types)


# A source's name is its `source` label value: Prometheus-safe and short.
SOURCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


def _sources(top: Section) -> tuple[dict[str, Any], dict[str, str]]:
    """`sources:`: each entry named after its type (`stripe:`), or named freely with a
    `type:` (`stripe_eu: {type: stripe, ...}`), for a second account of the same kind."""
    from exporter.sources import SOURCE_TYPES

    known = ", ".join(sorted(SOURCE_TYPES))
    section = top.section("sources")
    sources: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name in section.data:
        if not isinstance(name, str) or not SOURCE_NAME.fullmatch(name):
            raise section.error(str(name), "a source's name is its `source` label: lower-case "
                                "letters, digits and _, starting with a letter, at most 40")
        entry = section.section(name)
        kind = entry.string("type", name if name in SOURCE_TYPES else None)
        if kind is None:
            raise section.error(name, f"unknown source: name a type ({known}) or give `type:`")
        if kind not in SOURCE_TYPES:
            raise entry.error("type", f"unknown source type {kind!r} (known: {known})")
        if name in SOURCE_TYPES and kind != name:
            raise entry.error("type", f"a source named {name} is of type {name}; give the "
                              f"{kind} source another name")
        if kind == "sql" and name != "sql":
            raise entry.error("type", "the sql source has one instance, named sql (its "
                              "`databases:` hold as many databases as you need)")
        sources[name] = SOURCE_TYPES[kind].parse_config(entry)
        entry.finish()
        if kind != name:
            types[name] = kind
    section.finish()
    if not sources:
        raise top.error("sources", f"configure at least one source ({known})")
    return sources, types


def _currency(section: Section, name: str, value: str) -> str:
    code = value.strip().lower()
    if not re.fullmatch(r"[a-z]{3}", code):
        raise section.error(name, f"{value!r} is not a three-letter currency code")
    return code


def _fx_rates(section: Section, reporting_currency: str) -> dict[str, Decimal]:
    rates = {reporting_currency: Decimal(1)}
    for name in list(section.data):
        code = _currency(section, str(name), str(name))

        def convert(value: Any) -> Decimal:
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ValueError("must be a number")
            rate = Decimal(str(value))
            if not rate.is_finite() or rate <= 0:
                raise ValueError("must be a positive number")
            return rate

        rates[code] = section.convert(name, None, convert)
    section.finish()
    return rates


def _label_targets(entry: Section, kpi: catalog.Kpi) -> dict[str, float]:
    """`targets: {urgent: 2h}`: a KPI's per-label targets (support_resolution's priorities)."""
    if not entry.has("targets"):
        return {}
    section = entry.section("targets")
    known = [value for value, _ in kpi.targets]
    if not known:
        raise entry.error("targets", "this KPI has one target: use `target:`")
    targets: dict[str, float] = {}
    for name in list(section.data):
        if name not in known:
            raise section.error(str(name), f"unknown {kpi.target_label} (known: {', '.join(known)})")
        targets[name] = (section.duration if kpi.unit == "seconds" else section.number)(name, None)
    section.finish()
    return targets


def _kpi_overrides(section: Section) -> tuple[catalog.Kpi, ...]:
    known = catalog.by_key()
    overrides: dict[str, catalog.KpiOverride] = {}
    for key in list(section.data):
        if key not in known:
            raise section.error(str(key), "unknown KPI (see the KPI table in the README)")
        entry = section.section(key)
        # A time KPI takes durations ("2h", "60d") as well as seconds.
        value = entry.duration if known[key].unit == "seconds" else entry.number
        target = value("target", None)
        thresholds_section = entry.section("thresholds")
        thresholds: dict[str, float] = {}
        disabled: set[str] = set()
        names = {t.name for t in known[key].thresholds}
        for name in list(thresholds_section.data):
            if name not in names:
                choices = ", ".join(sorted(names)) or "none"
                raise thresholds_section.error(str(name), f"unknown threshold (this KPI has: {choices})")
            # `warning: off` turns the alert off; YAML reads a bare off (or no) as false.
            if thresholds_section.data[name] is False or thresholds_section.data[name] == "off":
                thresholds_section.raw(name)
                disabled.add(name)
                continue
            thresholds[name] = (thresholds_section.duration if known[key].unit == "seconds"
                                else thresholds_section.number)(name, None)
        thresholds_section.finish()
        targets = _label_targets(entry, known[key])
        team = entry.string("team")
        if team is not None and team_error(team):
            raise entry.error("team", team_error(team))
        entry.finish()
        overrides[key] = catalog.KpiOverride(target=target, thresholds=thresholds,
                                             targets=targets, team=team,
                                             disabled=frozenset(disabled))
    section.finish()
    return catalog.apply_overrides(overrides)
