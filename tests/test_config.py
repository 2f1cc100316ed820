"""Config loading: good configs parse; every bad one exits 2 with one clear line."""

import subprocess
import sys
from decimal import Decimal

import pytest
from click.testing import CliRunner

from exporter import catalog, config as config_module
from exporter.cli import main
from exporter.config import ConfigError, expand_env, listen_text, parse_duration, parse_listen

GOOD = """
listen: 0.0.0.0:9000
reporting_currency: EUR
fx_rates: {usd: 0.91, jpy: 0.0061}
sources:
  stripe:
    api_key: ${STRIPE_API_KEY}
    base_url: http://127.0.0.1:1234/
    poll_interval: 5m
    rate_limit: 10
    mrr: {include_past_due: false, apply_once_discounts: true}
    gross_margin: 0.75
kpis:
  mrr: {target: 250000, thresholds: {drop: 0.08}}
  arpa: {target: 750}
"""


def parse(text, env=None):
    return config_module.parse(text, "kpi.yml", env if env is not None else {})


def test_good_config():
    config = parse(GOOD, {"STRIPE_API_KEY": "sk_test_123456"})
    assert config.listen == ("0.0.0.0", 9000)
    assert config.reporting_currency == "eur"
    assert config.fx_rates == {"eur": Decimal(1), "usd": Decimal("0.91"), "jpy": Decimal("0.0061")}
    stripe = config.sources["stripe"]
    assert stripe.api_key.reveal() == "sk_test_123456"
    assert stripe.base_url == "http://127.0.0.1:1234"
    assert stripe.poll_interval == 300
    assert stripe.rate_limit == 10
    assert stripe.mrr.include_past_due is False
    assert stripe.mrr.include_cancel_at_period_end is True
    assert stripe.mrr.apply_once_discounts is True
    assert stripe.gross_margin == Decimal("0.75")
    kpis = {k.key: k for k in config.kpis}
    assert kpis["mrr"].target == 250000
    assert kpis["mrr"].threshold("drop").value == 0.08
    assert kpis["arpa"].target == 750
    assert kpis["failed_payments_amount"].threshold("critical").value == 5000  # untouched


def test_defaults():
    config = parse("sources: {stripe: {api_key: sk_test_x123}}")
    assert config.listen == ("127.0.0.1", 19877)
    assert config.reporting_currency == "usd"
    assert config.sources["stripe"].poll_interval == 300
    assert config.sources["stripe"].rate_limit == 25
    assert config.sources["stripe"].base_url == "https://api.stripe.com"
    assert config.sources["stripe"].gross_margin == Decimal("0.80")


def test_api_key_from_file(tmp_path):
    key_file = tmp_path / "stripe_key"
    key_file.write_text("sk_live_fromfile99\n")
    config = parse(f"sources: {{stripe: {{api_key_file: {key_file}}}}}")
    assert config.sources["stripe"].api_key.reveal() == "sk_live_fromfile99"


def test_secret_is_masked_in_repr():
    config = parse("sources: {stripe: {api_key: sk_test_secret42}}")
    assert "sk_test_secret42" not in repr(config)
    assert "sk_test_secret42" not in str(config.sources["stripe"])


S = "sources: {stripe: {api_key: k1234}}\n"  # a valid source, for errors elsewhere


@pytest.mark.parametrize("text,key", [
    ("sources: [", "line 1"),                                                    # bad YAML
    ("sources: {stripe: {}}", "sources.stripe.api_key"),                         # missing key
    ("sources: {paypal: {}}", "sources.paypal"),                                 # unknown source
    ("sources: {stripe_eu: {type: paypal, api_key: k1234}}", "sources.stripe_eu.type"),
    ("sources: {Stripe-EU: {type: stripe, api_key: k1234}}", "sources.Stripe-EU"),  # a label?
    ("sources: {mailgun: {type: stripe, api_key: k1234}}", "sources.mailgun.type"),
    ("sources: {app_db: {type: sql, databases: {a: {url: 'sqlite://'}}}}", "sources.app_db.type"),
    ("sources: {stripe_eu: {type: stripe}}", "sources.stripe_eu.api_key"),
    ("sources: {stripe: {api_key: k1234, colour: red}}", "sources.stripe.colour"),  # unknown key
    ("sources: {stripe: {api_key: k1234, poll_interval: soon}}", "sources.stripe.poll_interval"),
    ("sources: {stripe: {api_key: k1234, poll_interval: 0s}}", "sources.stripe.poll_interval"),
    ("sources: {stripe: {api_key: '${NOPE}'}}", "sources.stripe.api_key"),      # missing env var
    ("sources: {stripe: {api_key: k1234, api_key_file: /x}}", "sources.stripe.api_key"),
    ("sources: {stripe: {api_key_file: /does/not/exist}}", "sources.stripe.api_key_file"),
    ("sources: {stripe: {api_key: k1234, base_url: ftp://x}}", "sources.stripe.base_url"),
    ("sources: {stripe: {api_key: k1234, rate_limit: fast}}", "sources.stripe.rate_limit"),
    ("sources: {stripe: {api_key: k1234, mrr: {include_past_due: maybe}}}",
     "sources.stripe.mrr.include_past_due"),
    ("sources: {stripe: {api_key: k1234, gross_margin: 80}}", "sources.stripe.gross_margin"),
    ("sources: {mailgun: {}}", "sources.mailgun.api_key"),
    ("sources: {mailgun: {api_key: key-1, region: asia}}", "sources.mailgun.region"),
    ("sources: {mailgun: {api_key: key-1, domains: mg.example.com}}", "sources.mailgun.domains"),
    ("sources: {mailgun: {api_key: key-1, domains: ['']}}", "sources.mailgun.domains"),
    ("sources: {mailgun: {api_key: key-1, domains: ['mg.example.com/../x?y=1']}}",
     "sources.mailgun.domains"),
    ("sources: {mailgun: {api_key: key-1, domains: []}}", "sources.mailgun.domains"),
    ("sources: {mailgun: {api_key: key-1, max_domains: 0}}", "sources.mailgun.max_domains"),
    ("sources: {mailgun: {api_key: key-1, max_domains: 2.5}}", "sources.mailgun.max_domains"),
    ("sources: {mailgun: {api_key: key-1, suppressions_interval: x}}",
     "sources.mailgun.suppressions_interval"),
    (S + "kpis: {email_delivery_rate: {thresholds: {warning: high}}}",
     "kpis.email_delivery_rate.thresholds.warning"),
    (S + "kpis: {revenue_magic: {target: 1}}", "kpis.revenue_magic"),           # unknown KPI
    (S + "kpis: {mrr: {target: lots}}", "kpis.mrr.target"),
    (S + "kpis: {mrr: {thresholds: {wobble: 1}}}", "kpis.mrr.thresholds.wobble"),
    (S + "kpis: {mrr: {goal: 1}}", "kpis.mrr.goal"),
    (S + "kpis: {sales_cycle: {thresholds: {warning: two months}}}",
     "kpis.sales_cycle.thresholds.warning"),
    (S + "kpis: {support_resolution: {targets: {critical: 2h}}}",
     "kpis.support_resolution.targets.critical"),                                  # not a priority
    (S + "kpis: {support_resolution: {targets: {urgent: soon}}}",
     "kpis.support_resolution.targets.urgent"),
    (S + "kpis: {mrr: {targets: {usd: 1}}}", "kpis.mrr.targets"),                # one target only
    (S + "listen: nowhere", "listen"),
    (S + "reporting_currency: dollars", "reporting_currency"),
    (S + "fx_rates: {eur: -1}", "fx_rates.eur"),
    (S + "fx_rates: {euro: 1.1}", "fx_rates.euro"),
    (S + "colour: red", "colour"),
    ("- just a list", "(top level)"),
    ("listen: 127.0.0.1:9000", "sources"),                                       # nothing to poll
])
def test_bad_config_names_file_and_key(text, key):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"kpi.yml: {key}:"), message
    assert "\n" not in message


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400),
                                          ("250ms", 0.25), (45, 45), ("90", 90), (1.5, 1.5),
                                          # Prometheus' grammar
                                          ("1h30m", 5400), ("1w", 604800), ("90d", 7776000),
                                          ("1y", 31536000), ("2w3d", 1468800),
                                          ("1m30s500ms", 90.5), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "1m1h", "1h1h", "5x", "1.5h30m", "-5m", "0s", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9877", ("127.0.0.1", 9877)),
    (":8080", ("0.0.0.0", 8080)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_listen(text, expected):
    assert parse_listen(text) == expected
    assert parse_listen(listen_text(*expected)) == expected  # and back, brackets for IPv6
    assert listen_text("::1", 9000) == "[::1]:9000"


@pytest.mark.parametrize("bad", ["9000", "host:", "host:99999", "host:http"])
def test_bad_listen(bad):
    with pytest.raises(ValueError):
        parse_listen(bad)


def test_env_expansion():
    env = {"A": "one", "EMPTY": ""}
    assert expand_env("${A}-${B:-two}-${EMPTY:-three}-$${A}", env) == "one-two-three-${A}"
    with pytest.raises(KeyError):
        expand_env("${B}", env)


def test_cli_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("sources: {stripe: {api_key: k1234, poll_interval: 5x}}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"kpi-exporter: config error: {path}: sources.stripe.poll_interval: "
        "'5x' is not a duration; use 30s, 5m, 1h30m, 1w, 90d or plain seconds"]


def test_missing_config_file_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "none.yml")])
    assert result.exit_code == 2
    assert "none.yml" in result.stderr and "cannot read config" in result.stderr


def test_real_process_has_no_traceback_and_no_secret(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("sources: {stripe: {api_key: '${KEY}', poll_interval: never}}\n")
    env = {"KEY": "sk_live_verysecret123", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "sk_live_verysecret123" not in done.stderr + done.stdout
    assert "sources.stripe.poll_interval" in done.stderr


def test_help_shows_no_secret(monkeypatch):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_helpleak999")
    for args in (["--help"], ["serve", "--help"], ["demo", "--help"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0
        assert "sk_live_helpleak999" not in result.output


def test_env_value_is_never_echoed_in_errors():
    env = {"STRIPE_API_KEY": "sk_live_misplaced777"}
    with pytest.raises(ConfigError) as caught:
        parse("sources: {stripe: {api_key: k1234, poll_interval: '${STRIPE_API_KEY}'}}", env)
    message = str(caught.value)
    assert "sk_live_misplaced777" not in message
    assert message == ("kpi.yml: sources.stripe.poll_interval: the value from the environment "
                       "is not valid here (expected a duration)")


def test_non_utf8_config_exits_2(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes("sources: {stripe: {api_key: caf\xe9}}\n".encode("latin-1"))
    result = CliRunner().invoke(main, ["serve", "--config", str(path)])
    assert result.exit_code == 2
    assert "not UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_time_kpis_take_durations_or_seconds():
    from exporter import catalog

    config = parse(S + "kpis: {sales_cycle: {target: 40d, thresholds: {warning: 90d}},\n"
                       "       sales_lead_response: {target: 3600}}")
    kpis = catalog.by_key(config.kpis)
    assert kpis["sales_cycle"].target == 40 * 86400
    assert kpis["sales_cycle"].threshold("warning").value == 90 * 86400
    assert kpis["sales_lead_response"].target == 3600


def test_per_priority_resolution_targets_override_the_catalog():
    from exporter import catalog
    from exporter.sources.helpdesk.export import helpdesk_options

    config = parse(S + "kpis: {support_resolution: {targets: {urgent: 2h, low: 172800}}}")
    kpi = catalog.by_key(config.kpis)["support_resolution"]
    assert dict(kpi.targets) == {"urgent": 7200, "high": 4 * 3600, "normal": 24 * 3600,
                                 "low": 172800}
    assert helpdesk_options(config).sla_targets == dict(kpi.targets)


def test_the_readmes_example_config_is_valid():
    """The annotated config in the README is what users copy: it must load as shown."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("# kpi-exporter.yml")
    example = readme[start:readme.index("```", start)]
    env = {"STRIPE_API_KEY": "rk_test_1234", "MAILGUN_API_KEY": "key-1",
           "HUBSPOT_TOKEN": "pat-na1-1", "SF_CLIENT_ID": "3MVG9", "SF_CLIENT_SECRET": "s3cret",
           "ZENDESK_TOKEN": "zd-1", "INTERCOM_TOKEN": "ic-1"}
    config = config_module.parse(example, "README.md", env)
    assert sorted(config.sources) == ["hubspot", "intercom", "mailgun", "salesforce", "stripe",
                                      "zendesk"]


def test_the_readmes_kit_example_is_valid():
    """The README's `kit:` example, with a source added, loads to what it says."""
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```yaml\nkit:\n")
    example = readme[start + len("```yaml\n"):readme.index("```", start + 3)]
    config = parse(S + example)
    assert config.kit.job == "biz-kpis"
    assert set(config.kit.teams) == {"finance", "marketing"}
    assert catalog.by_key(config.kpis)["mrr"].team == "growth"
    assert [t.name for t in catalog.by_key(config.kpis)["failed_payments_amount"].thresholds] \
        == ["critical"]


def test_the_stacks_commented_kpis_and_kit_load_when_uncommented():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "provisioning/exporter/kpi-exporter.yml").read_text()
    block = text[text.index("# kpis:"):]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line
                            for line in block.splitlines())
    config = parse(S + uncommented)
    assert catalog.by_key(config.kpis)["mrr"].team == "growth"
    assert set(config.kit.teams) == {"finance"}


def test_two_accounts_of_one_type_under_names_of_their_own():
    config = parse("sources:\n  stripe: {api_key: k_us_1234}\n"
                   "  stripe_eu: {type: stripe, api_key: k_eu_1234, rate_limit: 10}\n")
    assert list(config.sources) == ["stripe", "stripe_eu"]
    assert [config.source_type(name) for name in config.sources] == ["stripe", "stripe"]
    assert config.sources["stripe_eu"].api_key.reveal() == "k_eu_1234"
    assert config.sources["stripe_eu"].rate_limit == 10


@pytest.mark.parametrize("command,variable", [
    ("serve", "KPI_EXPORTER_SERVE_CONFIG"), ("check", "KPI_EXPORTER_CHECK_CONFIG"),
    ("generate", "KPI_EXPORTER_GENERATE_CONFIG"), ("backfill", "KPI_EXPORTER_BACKFILL_CONFIG")])
def test_every_option_can_come_from_the_environment_under_its_own_name(command, variable,
                                                                       tmp_path):
    # as the README and docker-compose.yml name them: KPI_EXPORTER_<COMMAND>_<OPTION>
    env = {variable: str(tmp_path / "missing.yml"), "KPI_EXPORTER_BACKFILL_OUT": "x.om"}
    done = CliRunner().invoke(main, [command], env=env)
    assert done.exit_code == 2 and f"config error: {tmp_path / 'missing.yml'}" in done.output, \
        done.output
