"""Generated files must match their generator."""

from pathlib import Path

from exporter import catalog, docs

ROOT = Path(__file__).resolve().parents[1]


def test_generate_check_passes_on_the_committed_files():
    from click.testing import CliRunner
    import os

    from exporter.cli import main

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        result = CliRunner().invoke(main, ["generate", "--check"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output


def test_readme_metrics_table_is_current():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.update_readme(readme) == readme, "README is stale: run `kpi-exporter generate`"


def test_every_catalog_metric_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for metric in [k.metric for k in catalog.KPIS] + [h.metric for h in catalog.HEALTH]:
        assert f"`{metric}`" in readme


def test_kpi_table_lists_every_alerting_kpi_with_its_alert():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- BEGIN GENERATED: kpis -->")[1].split("<!-- END GENERATED: kpis -->")[0]
    assert "| `kpi_customer_churn_ratio` |" in table and "KpiCustomerChurnRateHigh" in table
    assert "| `kpi_mrr_by_currency` |" not in table  # tracked only: no target, no alert


def test_catalog_is_consistent():
    metrics = [k.metric for k in catalog.KPIS] + [h.metric for h in catalog.HEALTH]
    assert len(metrics) == len(set(metrics))
    assert len({k.key for k in catalog.KPIS}) == len(catalog.KPIS)
    for kpi in catalog.KPIS:
        # a recorded KPI is named like a recording rule (level:metric:operations)
        assert kpi.metric.startswith("source:kpi_" if kpi.recorded else "kpi_")
        assert kpi.labels[0] == "source"
        assert (kpi.target_label is None) == (not kpi.targets)
        assert kpi.target_label is None or kpi.target is None
        assert kpi.help.endswith(".") and kpi.description
        assert (kpi.type == "counter") == kpi.metric.endswith("_total")
        assert len({t.name for t in kpi.thresholds}) == len(kpi.thresholds)
        for threshold in kpi.thresholds:
            assert threshold.severity in ("critical", "warning", "info")
    for health in catalog.HEALTH:
        assert (health.type == "counter") == health.metric.endswith("_total")


def test_generate_outside_a_checkout_says_so_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from exporter.cli import main

    monkeypatch.chdir(tmp_path)
    for readme in (None, "# my own project\n"):  # no README, and somebody else's
        if readme:
            (tmp_path / "README.md").write_text(readme)
        result = CliRunner().invoke(main, ["generate"])
        assert result.exit_code == 2
        assert result.stderr.strip().count("\n") == 0
        assert "not a kpi-exporter checkout" in result.stderr and "--out DIR" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (tmp_path / "README.md").read_text() == "# my own project\n"  # untouched
