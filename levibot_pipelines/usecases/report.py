"""The model report of one symbol (walk-forward evaluation, policy backtest, report files, MLflow
run: ``report_symbol``, behind the ``model_report`` asset), and the policy backtest with the
configured policy and costs, shared by it, ``levibot evaluate`` and the publisher."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.home import report_prefix
from levibot_pipelines.adapters.plots import backtest_plots, reliability_diagram, risk_coverage_plot
from levibot_pipelines.adapters.reports import (
    BACKTEST_COLUMNS,
    backtest_rows,
    symbol_report,
    write_report,
)
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.decision_walk import DecisionBacktest, decision_backtest
from levibot_pipelines.core.evaluation.walk_forward import (
    EvalConfig,
    SymbolEvaluation,
    evaluate_symbol,
    risk_coverage_curves,
    symbol_data,
)
from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel
from levibot_pipelines.core.trading.policy import PolicyConfig
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest, backtest_predictions
from levibot_pipelines.settings import Settings

YEAR_MS = 365 * 24 * 3600 * 1000


def policy_config(s: Settings) -> PolicyConfig:
    return PolicyConfig(
        base_threshold=s.trading.entry_threshold,
        allow_short=s.trading.allow_short,
        max_uncertainty=s.trading.max_uncertainty,
    )


def backtest_config(s: Settings, symbol: str) -> BacktestConfig:
    """The symbol's costs, and the year in bars of the configured timeframe (a 24/7 market:
    35,040 15m bars) that annualises the per-bar statistics."""
    return BacktestConfig(
        costs=CostModel(fee_bps=s.trading.fee_bps, slippage_bps=s.trading.slippage_for(symbol)),
        bars_per_year=YEAR_MS // s.market.timeframe_ms,
    )


def backtest_symbol(
    s: Settings, symbol: str, predictions: pl.DataFrame, bars: pl.DataFrame, features: pl.DataFrame
) -> SymbolBacktest:
    """Backtest the walk-forward ``predictions`` of ``symbol`` on its candles ``bars`` (every
    stored bar) with its feature rows ``features``, under the configured policy and costs."""
    return backtest_predictions(
        predictions,
        bars.filter(pl.col("symbol") == symbol) if "symbol" in bars.columns else bars,
        features.filter(pl.col("symbol") == symbol) if "symbol" in features.columns else features,
        policy_config(s),
        backtest_config(s, symbol),
    )


def decide_symbol(
    s: Settings, symbol: str, ev: SymbolEvaluation, bars: pl.DataFrame
) -> DecisionBacktest:
    """The decision engine on ``symbol``'s walk-forward ``ev`` (choice on each fold's val and
    calib bars, trading on its test bars) with the configured costs and shorting, each
    position the configured maximum size."""
    cfg = backtest_config(s, symbol)
    return decision_backtest(
        ev.predictions,
        ev.selection,
        bars.filter(pl.col("symbol") == symbol) if "symbol" in bars.columns else bars,
        cfg.costs,
        horizons=s.trading.horizons,
        allow_short=s.trading.allow_short,
        size=policy_config(s).max_size,
        bars_per_year=cfg.bars_per_year,
    )


# The report run's plots in MLflow: {name: artifact path}. The same PNGs are in the report
# directory (``adapters.reports.write_report``: ``plots/{SYMBOL}_{...}.png``).
PLOT_ARTIFACTS = {
    "reliability_ensemble": "plots/reliability_ensemble.png",
    "risk_coverage": "plots/risk_coverage.png",
    "equity": "plots/equity.png",
    "drawdown": "plots/drawdown.png",
}


@dataclass(frozen=True)
class ReportResult:
    """What ``report_symbol`` wrote and logged, with what the asset's metadata shows."""

    symbol: str
    out: Path | str  # the report folder (an s3:// URL in a bucket): report.json, report.md, plots
    report: dict  # ``adapters.reports.symbol_report``: n_test, folds, per-model metrics
    backtest: dict  # the policy backtest's report
    run_url: str  # the MLflow run holding report.json and the plots
    reliability_png: bytes  # the ensemble's reliability diagram
    risk_coverage_png: bytes
    backtest_pngs: dict[str, bytes] = field(default_factory=dict)  # equity.png, drawdown.png, ...
    decision: dict = field(default_factory=dict)  # the decision engine's report, with its verdict


def metric_key(key: str) -> str:
    """MLflow metric names allow letters, digits and ``_-./ ``: no parentheses or commas."""
    return key.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")


def report_metrics(rep: dict, backtest: dict) -> dict[str, float]:
    """Flat MLflow metrics: ``{model}.{metric}`` of every scalar model metric, and
    ``backtest.{strategy}.{column}`` of the backtest table's numeric columns."""
    flat = {
        f"{name}.{k}": float(v)
        for name, m in rep["models"].items()
        for k, v in m.items()
        if not isinstance(v, dict)
    }
    columns = dict(BACKTEST_COLUMNS)
    flat_bt = {
        f"backtest.{name.strip()}.{k}": float(v)
        for name, m in backtest_rows(backtest).items()
        for k, v in m.items()
        if isinstance(v, int | float) and k in columns
    }
    return flat | {metric_key(k): v for k, v in flat_bt.items()}


def report_symbol(
    tracker: Tracker,
    store: ParquetStore,
    cfg: EvalConfig,
    settings: Settings,
    *,
    symbol: str,
    meta: dict,
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Walk-forward evaluation of ``symbol`` on the stored feature table, the policy backtest of
    its test predictions under the configured policy and costs (``settings.trading``), the
    report files under ``reports/{symbol}`` of the store's data root and an MLflow run
    (``report-{symbol}``) with the report and plots. ``meta`` (source, profile) goes into
    report.json next to ``symbols`` and ``config``.
    """
    features = store.read_features()
    data = symbol_data(features, symbol)
    ev = evaluate_symbol(data, cfg, tf_ms=settings.market.timeframe_ms, progress=progress)
    bars = store.read_ohlcv(symbol)
    bt = backtest_symbol(settings, symbol, ev.predictions, bars, features)
    decision = decide_symbol(settings, symbol, ev, bars).report
    out = store.root.ref(report_prefix(symbol))
    doc = {**meta, "symbols": [symbol], "config": cfg.to_dict()}
    write_report(
        store.root.child(report_prefix(symbol)), [ev], doc, {symbol: bt}, {symbol: decision}
    )
    rep = symbol_report(ev)
    bt_plots = backtest_plots(bt, symbol)  # x-axis: the test window's bar times (UTC dates)
    rel = reliability_diagram(
        ev.predictions.get_column("y_up").to_numpy(),
        ev.predictions.get_column("p_ensemble").to_numpy(),
        title=f"{symbol} ensemble (walk-forward test)",
    )
    rc = risk_coverage_plot(risk_coverage_curves(ev.predictions), title=symbol)
    run = tracker.log_training_run(
        run_name=f"report-{symbol}",
        params={"config": cfg.to_dict(), "policy": bt.report["policy"]},
        metrics=report_metrics(rep, bt.report),
        files={
            "report.json": json.dumps({**rep, "backtest": bt.report, "decision": decision}),
            PLOT_ARTIFACTS["reliability_ensemble"]: rel,
            PLOT_ARTIFACTS["risk_coverage"]: rc,
            PLOT_ARTIFACTS["equity"]: bt_plots["equity.png"],
            PLOT_ARTIFACTS["drawdown"]: bt_plots["drawdown.png"],
        },
        tags={"symbol": symbol, "kind": "report"},
    )
    return ReportResult(symbol, out, rep, bt.report, run.url, rel, rc, bt_plots, decision)
