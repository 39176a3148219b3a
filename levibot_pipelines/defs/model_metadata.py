"""Metadata of the model assets (``defs.models``): what the Dagster UI shows for a training run
and for ``model_report``. The use cases are imported where they are used (see ``defs.models``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.defs.common import (
    backtest_summary_md,
    image_md,
    markdown_table,
    mlflow_images_md,
)

if TYPE_CHECKING:
    from levibot_pipelines.usecases.report import ReportResult
    from levibot_pipelines.usecases.train import TrainResult

SCORES = ("auc", "log_loss", "brier", "bss", "ece")


def train_metadata(res: TrainResult) -> dict:
    """A training asset's metadata: the MLflow run, version, alias decision, test scores."""
    m = res.metrics
    return {
        "mlflow_run": dg.MetadataValue.url(redact_url(res.run_url)),
        "model_version": res.version,
        "champion_decision": res.decision["reason"],
        "promoted": bool(res.decision["promoted"]),
        "alias": res.decision.get("alias") or "none",
        "test_window_ms": res.window,
        "rows": dg.MetadataValue.json(res.sizes),
        **{f"test_{k}": float(m[k]) for k in SCORES},
        "test_acc_at_coverage": dg.MetadataValue.json(m["acc_at_coverage"]),
        # Shown inline (served by the MLflow UI); the embedded copy sits behind [Show Markdown].
        "reliability_plot": mlflow_images_md(res.run_url, {"reliability": "plots/reliability.png"}),
        "reliability": image_md(res.reliability_png, "reliability diagram"),
    }


def report_metadata(res: ReportResult) -> dict:
    """``model_report``'s metadata: verdict, scores per model, backtest, plots."""
    from levibot_pipelines.adapters.reports import backtest_markdown, decision_markdown
    from levibot_pipelines.usecases.report import PLOT_ARTIFACTS

    rep, bt = res.report, res.backtest
    table = pl.DataFrame(
        [{"model": n, **{k: m[k] for k in SCORES}} for n, m in rep["models"].items()]
    )
    return {
        "verdict": res.decision["verdict"],
        "decision": dg.MetadataValue.md(decision_markdown(res.decision)),
        "n_test": rep["n_test"],
        "folds": rep["folds"],
        "metrics": dg.MetadataValue.md(markdown_table(table)),
        "backtest_summary": dg.MetadataValue.md(backtest_summary_md(bt)),
        # Inline images served by the MLflow UI; the PNG files; then the embedded copies.
        "plots": mlflow_images_md(res.run_url, PLOT_ARTIFACTS),
        "plot_files": dg.MetadataValue.path(f"{res.out}/plots"),
        "mlflow_run": dg.MetadataValue.url(redact_url(res.run_url)),
        "report": dg.MetadataValue.path(f"{res.out}/report.md"),
        "reliability_ensemble": image_md(res.reliability_png, "reliability"),
        "risk_coverage": image_md(res.risk_coverage_png, "risk-coverage"),
        "backtest": dg.MetadataValue.md(backtest_markdown(bt)),
        "backtest_sharpe": float(bt["sharpe"]),
        "backtest_n_trades": int(bt["n_trades"]),
        "buy_and_hold_sharpe": float(bt["buy_and_hold"]["sharpe"]),
        "equity": image_md(res.backtest_pngs["equity.png"], "equity"),
        "drawdown": image_md(res.backtest_pngs["drawdown.png"], "drawdown"),
    }
