"""Hostile and broken config files, through the real command line: each exits 2 with
one line naming the file and the key, quickly, and never echoes a value that came
from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every case a real `kpi-exporter` process

S = "sources: {stripe: {api_key: sk_test_1234}}\n"
BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
                    f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
                    f" *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(9)]) + "\n"
SMALL_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"   # 10 aliases of 10: 100 under the
              "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"  # alias cap, 10^5 values
              "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
              "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
              "e: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n")
SECRET = "sk_live_51HxYzAbCdEfGhIjKlMnOp"  # what a mis-assigned variable may hold


def run(tmp_path: Path, text: str | bytes | None = None, *, target: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = target or tmp_path / "kpi.yml"
    if text is not None:
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return subprocess.run([sys.executable, "-m", "exporter", "serve", "--config", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def one_line(done: subprocess.CompletedProcess, key: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and "Usage:" not in done.stderr
    assert f": {key}: " in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("text,key,says", [
    (BOMB, "(top level)", "refused"),
    ("a: &a [x]\n" + "".join(f"k{i}: *a\n" for i in range(150)), "(top level)",
     "more than 100 aliases"),
    (SMALL_BOMB, "(top level)", "more than 100000 values"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "(top level)", "nested more than"),
    ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 60)) + "  " * 60 + "x: 1\n",
     "(top level)", "nested more than"),
    ("sources: [stripe\n", "line 2", "invalid YAML"),
    (S + "sources: {mailgun: {}}\n", "(top level)", "'sources' appears twice"),
    (S + "kit: {teams: 5}\n", "kit.teams", "mapping"),
    (S + "kpis: {mrr: {thresholds: {drop: lots}}}\n", "kpis.mrr.thresholds.drop", "not a number"),
    ("sources: {stripe: {api_key: k, poll_interval: 1m1h}}\n", "sources.stripe.poll_interval",
     "not a duration"),
])
def test_hostile_and_broken_yaml(tmp_path, text, key, says):
    started = time.monotonic()
    done = run(tmp_path, text)
    assert says in one_line(done, key)
    assert time.monotonic() - started < 30  # bounded: not hung on a bomb


def test_a_directory_a_missing_file_a_huge_file_and_binary(tmp_path):
    assert "is a directory" in one_line(run(tmp_path, target=tmp_path), "(top level)")
    assert "cannot read config" in one_line(run(tmp_path, target=tmp_path / "none.yml"),
                                            "(top level)")
    huge = S + "# " + "x" * (1024 * 1024) + "\n"
    assert "larger than 1024 KiB" in one_line(run(tmp_path, huge), "(top level)")
    assert "not UTF-8" in one_line(run(tmp_path, b"\xff\xfe\x00sources"), "(top level)")


@pytest.mark.parametrize("text,key", [
    ("sources: {zendesk: {subdomain: acme, email: '${X}', api_token: t}}\n",
     "sources.zendesk.email"),
    ("sources: {zendesk: {subdomain: '${X}', email: a@b.example, api_token: t}}\n",
     "sources.zendesk.subdomain"),
    ("sources: {intercom: {access_token: t, region: '${X}'}}\n", "sources.intercom.region"),
    ("sources: {mailgun: {api_key: t, region: '${X}'}}\n", "sources.mailgun.region"),
    ("sources: {stripe: {api_key: t, base_url: '${X}'}}\n", "sources.stripe.base_url"),
    ("sources: {salesforce: {login_url: '${X}', client_id: c, client_secret: s}}\n",
     "sources.salesforce.login_url"),
    ("sources: {hubspot: {access_token: t, pipelines: ['${X}', 5, [1]]}}\n",
     "sources.hubspot.pipelines"),
    (S + "reporting_currency: '${X}'\n", "reporting_currency"),
    (S + "listen: '${X}'\n", "listen"),
    (S + "kit: {job: '${X} x'}\n", "kit.job"),
    (S + "kit: {grafana_url: '${X}'}\n", "kit.grafana_url"),
    (S + "kpis: {mrr: {team: '${X}'}}\n", "kpis.mrr.team"),
])
def test_a_value_from_the_environment_is_never_echoed(tmp_path, text, key):
    done = run(tmp_path, text, env={"X": SECRET})
    line = one_line(done, key)
    assert SECRET not in done.stderr and SECRET[:12] not in line, line
