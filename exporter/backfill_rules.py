"""`kpi-exporter backfill-rules`: the recording rules' past, once the backfill is served.

    kpi-exporter backfill-rules --blocks /prometheus --url http://prometheus:9090 \
        --rules alert_rules/kpi-exporter.rules.yml

`kpi-exporter backfill --blocks DIR` leaves a marker in DIR with its steps.
Once Prometheus serves those blocks, each recording rule (ARR, the
week-over-week changes) is evaluated by Prometheus itself at the same steps
(one range query per rule, aligned to the steps) and the results are written
as OpenMetrics and turned into blocks in DIR by promtool; Prometheus loads
new blocks in its data directory within a minute. `promtool tsdb
create-blocks-from rules` is not used: it evaluates a group at an offset
hashed from the group's name, which misses samples a day apart.

A rule over a series another rule records gets no past (the other rule's past
is not in Prometheus yet), and neither does one whose series were not
backfilled: a query that returns nothing writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import requests
import yaml

from exporter.backfill import MARKER as BACKFILL_MARKER, family_lines, label_text

log = logging.getLogger(__name__)

RULES_MARKER = "kpi-exporter-rules-backfill.done"


def steps_of(blocks: Path) -> dict:
    """The steps the backfill wrote into `blocks` ({"first", "last", "step", "now"})."""
    marker = blocks / BACKFILL_MARKER
    try:
        found = json.loads(marker.read_text())
        return {key: int(found[key]) for key in ("first", "last", "step", "now")}
    except FileNotFoundError:
        raise FileNotFoundError(f"{marker} not found: nothing was backfilled there (`kpi-exporter "
                                f"backfill --blocks {blocks}` leaves it)") from None
    except (ValueError, KeyError, TypeError):
        raise LookupError(f"{marker}: not a marker this version of kpi-exporter wrote "
                          "(back up and remove it, then backfill again)") from None


def recording_rules(paths: list[Path]) -> list[dict]:
    """Every recording rule of the files (a directory: its *.yml and *.yaml), in order."""
    files = [f for p in paths for f in (sorted([*p.glob("*.yml"), *p.glob("*.yaml")])
                                       if p.is_dir() else [p])]
    rules = []
    for file in files:
        for group in (yaml.safe_load(file.read_text()) or {}).get("groups") or []:
            rules += [rule for rule in group.get("rules") or [] if "record" in rule]
    return rules


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/-/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} was not ready within {timeout:.0f} s")
        time.sleep(1)


def evaluate(url: str, rule: dict, moments: dict) -> dict[str, list[tuple[int, float]]]:
    """The rule at every step: label text -> (time, value), the rule's labels over the
    result's. A range query for the whole steps, an instant one for the last moment."""
    expr, extra = rule["expr"], {k: str(v) for k, v in (rule.get("labels") or {}).items()}
    found: dict[str, list[tuple[int, float]]] = {}

    def add(metric: dict, at: float, value: str) -> None:
        labels = {k: v for k, v in metric.items() if k != "__name__"}
        found.setdefault(label_text({**labels, **extra}), []).append((int(at), float(value)))

    ranged = _query(url, "/api/v1/query_range", query=expr, start=moments["first"],
                    end=moments["last"], step=moments["step"])
    for series in ranged:
        for at, value in series["values"]:
            add(series["metric"], at, value)
    for series in _query(url, "/api/v1/query", query=expr, time=moments["now"]):
        add(series["metric"], *series["value"])
    return found


def _query(url: str, path: str, **params) -> list[dict]:
    reply = requests.get(url + path, params=params, timeout=60)
    body = reply.json() if reply.headers.get("content-type", "").startswith("application/json") \
        else {}
    if reply.status_code != 200 or body.get("status") != "success":
        raise RuntimeError(f"{path} {params.get('query')!r}: HTTP {reply.status_code} "
                           f"{body.get('error') or reply.text[:200]}")
    return body["data"]["result"]


def openmetrics(recorded: dict[str, dict[str, list[tuple[int, float]]]]) -> Iterator[str]:
    """Recorded series as OpenMetrics, each family once, each series in time order."""
    for name in sorted(recorded):
        yield from family_lines(name, recorded[name])
    yield "# EOF\n"
