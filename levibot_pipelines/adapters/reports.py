"""Evaluation reports: ``report.json``, ``report.md``, PNG plots and the predictions, in a local
folder or a data root (``adapters.object_store``; ``reports/{SYMBOL}/`` for ``model_report``),
each file written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from levibot_pipelines.adapters.object_store import DataRoot, as_root
from levibot_pipelines.adapters.plots import backtest_plots, reliability_diagram, risk_coverage_plot
from levibot_pipelines.adapters.store import json_safe
from levibot_pipelines.core.evaluation.skill import BootstrapConfig
from levibot_pipelines.core.evaluation.walk_forward import (
    MODELS,
    SKILL_MODELS,
    SymbolEvaluation,
    risk_coverage_curves,
)
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest

METRIC_KEYS = ("auc", "log_loss", "brier", "bss", "ece")


def symbol_report(ev: SymbolEvaluation) -> dict:
    pred = ev.predictions
    return {
        "n_test": pred.height,
        "folds": len(ev.folds),
        "test_start_ms": int(pred.get_column("timestamp").min()),
        "test_end_ms": int(pred.get_column("timestamp").max()),
        "models": ev.metrics,
        "fold_details": ev.folds,
        "feature_columns": list(ev.feature_importance),
        "feature_importance": ev.feature_importance,
    }


def write_report(
    out: Path | DataRoot,
    evaluations: list[SymbolEvaluation],
    meta: dict,
    backtests: dict[str, SymbolBacktest] | None = None,
    decisions: dict[str, dict] | None = None,
) -> dict:
    """Write the report files under ``out`` (a folder, or a data root such as
    ``root.child("reports/BTCUSDT")``) and return the ``report.json`` content.
    ``decisions``: per symbol the decision engine's report
    (``core.evaluation.decision_walk.decision_backtest``), under ``decision`` with its verdict
    line at the top of the symbol's section in report.md."""
    dest = as_root(out)
    backtests = backtests or {}
    report = {"meta": meta, "symbols": {ev.symbol: symbol_report(ev) for ev in evaluations}}
    for symbol, bt in backtests.items():
        report["symbols"][symbol]["backtest"] = bt.report
    for symbol, decision in (decisions or {}).items():
        report["symbols"][symbol]["decision"] = decision
    report = json_safe(report)
    dest.write_text_atomic("report.json", json.dumps(report, indent=2) + "\n")
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
        dest.write_bytes_atomic(
            f"plots/{ev.symbol}_risk_coverage.png",
            risk_coverage_plot(risk_coverage_curves(ev.predictions), title=f"{ev.symbol}"),
        )
        md += [f"## {ev.symbol}", ""]
        if "decision" in report["symbols"][ev.symbol]:
            md += [decision_markdown(report["symbols"][ev.symbol]["decision"]), ""]
        md += [_table(report["symbols"][ev.symbol]), ""]
        md += [skill_markdown(report["symbols"][ev.symbol]["models"]), ""]
        if ev.feature_importance:
            md += [importance_markdown(report["symbols"][ev.symbol]["feature_importance"]), ""]
        for name in ("lgbm", "deep", "ensemble"):
            p = ev.predictions.get_column(f"p_{name}").to_numpy()
            png = f"{ev.symbol}_{name}_reliability.png"
            dest.write_bytes_atomic(
                f"plots/{png}", reliability_diagram(y, p, title=f"{ev.symbol} {name}")
            )
            md.append(f"![{ev.symbol} {name} reliability](plots/{png})")
        md += ["", f"![{ev.symbol} risk-coverage](plots/{ev.symbol}_risk_coverage.png)", ""]
        if ev.symbol in backtests:
            md += [backtest_markdown(report["symbols"][ev.symbol]["backtest"]), ""]
            for name, png in backtest_plots(backtests[ev.symbol], ev.symbol).items():
                dest.write_bytes_atomic(f"plots/{ev.symbol}_{name}", png)
                md.append(f"![{ev.symbol} {name[:-4]}](plots/{ev.symbol}_{name})")
            md.append("")
        dest.write_parquet_atomic(f"predictions_{ev.symbol}.parquet", ev.predictions)
    dest.write_text_atomic("report.md", "\n".join(md) + "\n")
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


def _ci_cell(value, ci, digits: int = 4) -> str:
    """``+0.0123 [-0.0050, +0.0290]``; ``-`` when undefined."""
    if value is None or ci is None or None in ci:
        return "-"
    return f"{value:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]"


def _excludes_zero(ci) -> bool:
    return ci is not None and None not in ci and (ci[0] > 0 or ci[1] < 0)


def _best_model(models: dict) -> str:
    """The model of lowest test log loss among LightGBM, the Transformer and the ensemble."""
    return min(("lgbm", "deep", "ensemble"), key=lambda n: models[n]["log_loss"])


def skill_markdown(models: dict) -> str:
    """The skill table of one symbol (``models``: report.json's per-model metrics, each with its
    ``skill``), the deep-vs-LightGBM and best-vs-reversal lines and whether any CI excludes 0."""
    bc = BootstrapConfig()
    lines = [
        f"Skill by what trades: Spearman IC of p with the next return, top minus bottom p-decile "
        f"mean return (bps), paired differences (model minus reversal rule; log loss < 0 and "
        f"AUC > 0 favour the model); {bc.level:.0%} CIs from a moving-block bootstrap "
        f"({bc.block}-bar blocks, {bc.resamples} resamples, seed {bc.seed}).",
        "",
        "| model | IC [CI] | top-bottom decile, bps [CI] | ECE uniform | ECE quantile "
        "| log loss vs reversal [CI] | AUC vs reversal [CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    significant = []
    for name in SKILL_MODELS:
        s = models[name]["skill"]
        vs = s["paired"].get(f"{name}_vs_reversal", {})
        spread = _ci_cell(s["top_minus_bottom_bps"], s["top_minus_bottom_ci_bps"], 2)
        cells = [
            _ci_cell(s["ic"], s["ic_ci"]),
            spread if s["deciles"] else "- (< 10 distinct p)",
            _fmt(models[name]["ece"]),
            _fmt(s["ece_quantile"]),
            _ci_cell(vs.get("log_loss_diff"), vs.get("log_loss_diff_ci")),
            _ci_cell(vs.get("auc_diff"), vs.get("auc_diff_ci")),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        significant += [f"{name} IC"] * _excludes_zero(s["ic_ci"])
        significant += [f"{name} top-bottom"] * _excludes_zero(s["top_minus_bottom_ci_bps"])
        for pair, d in s["paired"].items():
            significant += [
                f"{pair} {k}" for k in ("log_loss", "auc") if _excludes_zero(d[k + "_diff_ci"])
            ]
    dl = models["deep"]["skill"]["paired"]["deep_vs_lgbm"]
    best = _best_model(models)
    vs_rev = models[best]["skill"]["paired"][f"{best}_vs_reversal"]
    lines += [
        "",
        f"Deep minus LightGBM: log loss {_ci_cell(dl['log_loss_diff'], dl['log_loss_diff_ci'])}, "
        f"AUC {_ci_cell(dl['auc_diff'], dl['auc_diff_ci'])}. Best model by log loss ({best}) "
        f"minus reversal: log loss "
        f"{_ci_cell(vs_rev['log_loss_diff'], vs_rev['log_loss_diff_ci'])}, AUC "
        f"{_ci_cell(vs_rev['auc_diff'], vs_rev['auc_diff_ci'])}.",
        "",
        f"CIs that exclude zero: {', '.join(significant)}."
        if significant
        else "No model's CI excludes zero (IC, top-bottom decile, paired log loss and AUC): "
        "no skill is distinguishable from noise at this level.",
    ]
    return "\n".join(lines)


def importance_markdown(importance: dict[str, float | None]) -> str:
    """The features the models were trained on, by LightGBM's gain share (mean over folds),
    largest first."""
    lines = [
        f"Features ({len(importance)}) by LightGBM gain share, mean over the folds:",
        "",
        "| feature | gain share |",
        "|---|---|",
    ]
    ranked = sorted(importance.items(), key=lambda kv: -(kv[1] or 0.0))
    lines += [f"| {name} | {_fmt(share)} |" for name, share in ranked]
    return "\n".join(lines)


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
    if "reversal_rule" in bt:  # reports written before the rule joined the baselines lack it
        rows["reversal rule"] = bt["reversal_rule"]
    rows["flat"] = bt["flat"]
    return rows


def random_distribution_markdown(bt: dict) -> str:
    """Where each policy sits among its random twins: the 5/50/95% quantiles of their total
    return and daily Sharpe over the seeds, and the fraction of seeds the policy beat; empty
    when the report has no ``random_distribution``."""
    policies = {"ensemble": bt, **bt["models"]}
    dists = {name: m.get("random_distribution") for name, m in policies.items()}
    dists = {k: v for k, v in dists.items() if v}
    if not dists:
        return ""
    n_seeds = next(iter(dists.values()))["n_seeds"]
    lines = [
        f"Random policy with each policy's trades, mean holding and size, over {n_seeds} seeds "
        "(5% / 50% / 95% quantiles); percentile: the fraction of seeds whose total return is "
        "below the policy's.",
        "",
        "| policy | total return 5% | 50% | 95% | Sharpe (daily) 5% | 50% | 95% | percentile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in dists.items():
        cells = [
            _fmt(d[metric].get(q))
            for metric in ("total_return", "sharpe_daily")
            for q in ("q05", "q50", "q95")
        ]
        cells.append(_fmt(d.get("policy_percentile")))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    dist = random_distribution_markdown(bt)
    return "\n".join(lines) + (f"\n\n{dist}" if dist else "")


def decision_markdown(d: dict) -> str:
    """The verdict line and the per-fold choices of the decision engine."""
    rows = [
        f"**Verdict: {d['verdict']}.** Decision engine: per fold, {d['n_candidates']} candidates "
        "(model x horizon x margin, and flat) chosen on the validation and calibration bars, "
        f"traded frozen on the test bars: {d['n_trades']} trades, net total "
        f"{d['total_return']:+.2%} (gross {d['gross_total_return']:+.2%}), daily Sharpe "
        f"{d['sharpe_daily']:.2f}, PSR {d['psr']:.3f}, deflated Sharpe ratio {d['dsr']:.3f}, "
        f"turnover {d['turnover']:.3f}/day.",
        "",
        "| fold | chosen | horizon | margin bps | test trades | test net | passed | best candidate "
        "on the score window (t, mean net bps, trades) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in d["folds"]:
        best = (
            "-"
            if f.get("best") is None
            else (
                f"{f['best']} (t {f['best_t_stat']:.2f}, {f['best_mean_net_bps']:+.1f}, "
                f"{f['best_n_trades']})"
            )
        )
        rows.append(
            f"| {f['fold']} | {f['model']} | {f['horizon']} | {f['margin_bps']:g} | "
            f"{f['n_trades']} | {f['net_return']:+.2%} | {f.get('candidates_passed', '-')} | "
            f"{best} |"
        )
    return "\n".join(rows)
