"""Evaluation reports on disk: ``report.json``, ``report.md``, PNG plots and the predictions."""

from __future__ import annotations

import json
import math
from pathlib import Path

from levibot_pipelines.adapters.plots import backtest_plots, reliability_diagram, risk_coverage_plot
from levibot_pipelines.core.evaluation.walk_forward import (
    MODELS,
    SymbolEvaluation,
    risk_coverage_curves,
)
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest

METRIC_KEYS = ("auc", "log_loss", "brier", "bss", "ece")


def _clean(value):
    """JSON-safe: NaN/inf become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def symbol_report(ev: SymbolEvaluation) -> dict:
    pred = ev.predictions
    return {
        "n_test": pred.height,
        "folds": len(ev.folds),
        "test_start_ms": int(pred.get_column("timestamp").min()),
        "test_end_ms": int(pred.get_column("timestamp").max()),
        "models": ev.metrics,
        "fold_details": ev.folds,
    }


def write_report(
    out: Path,
    evaluations: list[SymbolEvaluation],
    meta: dict,
    backtests: dict[str, SymbolBacktest] | None = None,
) -> dict:
    """Write the report files under ``out`` and return the ``report.json`` content."""
    out.mkdir(parents=True, exist_ok=True)
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    backtests = backtests or {}
    report = {"meta": meta, "symbols": {ev.symbol: symbol_report(ev) for ev in evaluations}}
    for symbol, bt in backtests.items():
        report["symbols"][symbol]["backtest"] = bt.report
    report = _clean(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        "# levibot walk-forward evaluation",
        "",
        f"Source: `{meta.get('source')}`; profile `{meta.get('profile')}`; "
        f"{meta.get('wall_s', 0):.0f} s. Out-of-sample test windows only; every model and "
        "baseline is scored on the same bars.",
        "",
    ]
    for ev in evaluations:
        y = ev.predictions.get_column("y_up").to_numpy()
        (plots / f"{ev.symbol}_risk_coverage.png").write_bytes(
            risk_coverage_plot(risk_coverage_curves(ev.predictions), title=f"{ev.symbol}")
        )
        md += [f"## {ev.symbol}", "", _table(report["symbols"][ev.symbol]), ""]
        for name in ("lgbm", "deep", "ensemble"):
            p = ev.predictions.get_column(f"p_{name}").to_numpy()
            path = plots / f"{ev.symbol}_{name}_reliability.png"
            path.write_bytes(reliability_diagram(y, p, title=f"{ev.symbol} {name}"))
            md.append(f"![{ev.symbol} {name} reliability](plots/{path.name})")
        md += ["", f"![{ev.symbol} risk-coverage](plots/{ev.symbol}_risk_coverage.png)", ""]
        if ev.symbol in backtests:
            md += [backtest_markdown(report["symbols"][ev.symbol]["backtest"]), ""]
            for name, png in backtest_plots(backtests[ev.symbol], ev.symbol).items():
                (plots / f"{ev.symbol}_{name}").write_bytes(png)
                md.append(f"![{ev.symbol} {name[:-4]}](plots/{ev.symbol}_{name})")
            md.append("")
        ev.predictions.write_parquet(out / f"predictions_{ev.symbol}.parquet")
    (out / "report.md").write_text("\n".join(md) + "\n")
    return report


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _table(sym: dict) -> str:
    head = (
        f"{sym['n_test']} test bars in {sym['folds']} folds.\n\n"
        "| model | AUC | log loss | Brier | BSS | ECE | acc@10% | acc@20% | acc@50% |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for name in MODELS:
        m = sym["models"][name]
        acc = m["acc_at_coverage"]
        cells = [_fmt(m[k]) for k in METRIC_KEYS] + [_fmt(acc[c]) for c in ("0.1", "0.2", "0.5")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    picp = sym["models"]["deep"].get("picp", {})
    tail = f"\n\nDeep sigma PICP: 50% -> {_fmt(picp.get('0.5'))}, 90% -> {_fmt(picp.get('0.9'))}."
    return head + "\n" + "\n".join(rows) + tail


BACKTEST_COLUMNS = (
    ("sharpe", "Sharpe"),
    ("sharpe_daily", "Sharpe (daily)"),
    ("psr", "PSR"),
    ("max_drawdown", "max DD"),
    ("win_rate", "win rate"),
    ("turnover", "turnover/day"),
    ("n_trades", "trades"),
    ("costs_paid", "costs paid"),
    ("total_return", "total return"),
)


def backtest_rows(bt: dict) -> dict[str, dict]:
    """Rows of the backtest table: each policy, its 2x-cost and random twins, the references."""
    rows = {"policy (ensemble)": bt, "  gross of costs": bt["gross_of_costs"]}
    rows["  at 2x costs"] = bt["at_2x_costs"]
    rows["  random, same turnover"] = bt["random_same_turnover"]
    for model, m in bt["models"].items():
        rows[f"policy ({model})"] = m
    rows["buy and hold"] = bt["buy_and_hold"]
    rows["flat"] = bt["flat"]
    return rows


def backtest_markdown(bt: dict) -> str:
    costs = bt["costs"]
    head = (
        f"Policy backtest on the same test bars, net of {costs['fee_bps']:g} bps fees and "
        f"{costs['slippage_bps']:g} bps slippage per side; signal at the close, fill at the next "
        "open; stops adverse-first.\n\n"
        "| strategy | " + " | ".join(label for _, label in BACKTEST_COLUMNS) + " |\n"
        "|---|" + "---|" * len(BACKTEST_COLUMNS)
    )
    lines = [head]
    for name, m in backtest_rows(bt).items():
        cells = [_fmt(m.get(k)) if k != "n_trades" else str(m.get(k)) for k, _ in BACKTEST_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
