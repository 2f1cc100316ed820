"""`kpi-exporter backfill`: the KPIs of the past, as OpenMetrics for promtool.

    kpi-exporter backfill --config kpi-exporter.yml --days 365 --step 1d --out backfill.om
    promtool tsdb create-blocks-from openmetrics backfill.om /prometheus

A source that can value its KPIs at a past moment has a `backfill(steps)`
method: it reads the upstream once, as a poll does, and yields the samples of
each step it can rebuild, the last step (the moment the backfill runs) being
an ordinary poll. A step it cannot rebuild gets nothing, never a guess.
Steps are whole multiples of the step since the epoch (midnight UTC for 1d).
The series carry the `job` and `instance` labels the live scrape will give
them, so that the backfilled and the live series are the same series.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from typing import IO, Callable, Iterable, Iterator

import click

from exporter import catalog
from exporter.sources.base import Sample

log = logging.getLogger(__name__)

# Left in the blocks directory by `backfill --blocks`: a rerun does nothing, and
# `backfill-rules` reads the steps from it.
MARKER = "kpi-exporter-backfill.done"


def steps(now: int, days: float, step: float) -> list[int]:
    """Whole multiples of `step` in the last `days`, and `now` last."""
    first = math.ceil((now - days * 86400) / step) * step
    result = [int(first + i * step) for i in range(int((now - first) // step) + 1)]
    return [t for t in result if t < now] + [now]


def label_text(labels: dict[str, str]) -> str:
    def escaped(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{name}="{escaped(value)}"' for name, value in sorted(labels.items()))


def openmetrics(samples: Iterable[tuple[int, Sample]], kpis: tuple[catalog.Kpi, ...],
                extra_labels: dict[str, str]) -> Iterator[str]:
    """OpenMetrics text lines: each family once, its series in order, each series'
    samples in time order (what `promtool tsdb create-blocks-from openmetrics` takes)."""
    by_key = {kpi.key: kpi for kpi in kpis if not kpi.recorded}
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for at, sample in samples:
        kpi = by_key.get(sample.kpi)
        if kpi is None or set(sample.labels) != set(kpi.labels):
            raise ValueError(f"{sample.kpi}{sorted(sample.labels)} is not a KPI of the catalog")
        labels = label_text({**sample.labels, **extra_labels})
        series.setdefault(kpi.key, {}).setdefault(labels, []).append((at, sample.value))
    for key in sorted(series, key=lambda k: by_key[k].metric):
        yield from family_lines(by_key[key].metric, series[key], by_key[key].help)
    yield "# EOF\n"


def family_lines(metric: str, series: dict[str, list[tuple[int, float]]],
                 help_text: str | None = None) -> Iterator[str]:
    """One gauge family as OpenMetrics lines: label text -> (time, value) points,
    each series in time order."""
    if help_text is not None:
        escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        yield f"# HELP {metric} {escaped}\n"
    yield f"# TYPE {metric} gauge\n"
    for labels, points in sorted(series.items()):
        for at, value in sorted(points):
            yield f"{metric}{{{labels}}} {number(value)} {at}\n"


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def run(sources: list, kpis: tuple[catalog.Kpi, ...], moments: list[int], out: IO[str], *,
        job: str, instance: str, progress: Callable[[str, int], object] | None = None
        ) -> dict[str, int]:
    """Backfill every source that can; returns the steps written per source."""
    written: dict[str, int] = {}
    collected: list[tuple[int, Sample]] = []
    for source in sources:
        if not hasattr(source, "backfill"):
            log.info("%s: keeps no history to backfill from (see the README)", source.name)
            continue
        count = 0
        for at, samples in source.backfill(moments):
            collected += [(at, s) for s in samples]
            count += 1
            if progress is not None:
                progress(source.name, at)
        written[source.name] = count
        log.info("%s: %d of %d steps backfilled", source.name, count, len(moments))
    out.writelines(openmetrics(collected, kpis, {"job": job, "instance": instance}))
    return written


def marker_text(out: str, moments: list[int]) -> str:
    """What the marker holds: the file, the whole steps (first, last, step) and now."""
    whole = moments[:-1] or moments
    step = whole[1] - whole[0] if len(whole) > 1 else 86400
    return json.dumps({"out": out, "first": whole[0], "last": whole[-1], "step": step,
                       "now": moments[-1]}) + "\n"


@contextlib.contextmanager
def progress(sources: int, total: int) -> Iterator[Callable[[str, int], object]]:
    """What `run` reports each step to: a progress bar on a terminal, else log lines
    every tenth of a source's `total` steps (for a file or a pipe)."""
    if sys.stderr.isatty():
        with click.progressbar(length=sources * total, label="backfill",
                               file=sys.stderr) as bar:
            yield lambda name, at: bar.update(1)
        return
    seen: dict[str, int] = {}

    def report(name: str, at: int) -> None:
        seen[name] = seen.get(name, 0) + 1
        if seen[name] % max(1, total // 10) == 0 or seen[name] == total:
            log.info("%s: %d of %d steps", name, seen[name], total)

    yield report
