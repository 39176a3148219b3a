"""The decision engine on the walk-forward (issue: decisions that pay for their costs).

Per fold: the policy is chosen by ``core.evaluation.selection.select_decision`` with the fold's
validation bars as the fit window and its calibration bars as the score window (both before the
test bars, purged), from the grid fixed in ``selection`` over the models of ``DECISION_MODELS``,
FLAT always among the candidates. The chosen policy is then traded, frozen, on the fold's test
bars with the symbol's real costs (``core.trading.backtest``): signal at the close of ``t``,
fill at ``open(t+1)``, fees and slippage on both legs; a position still open at the end of a
test window is charged its exit leg there. Nothing the choice used comes from a test window.

The scores are the walk-forward's calibrated probabilities (higher = up); the reversal rule is
a candidate like the models. The calibrators were fitted on the calibration window's one-bar
direction labels; they are monotone, so they move no bar across another in the score window's
ranking, and no test label is used anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_columns
from levibot_pipelines.core.evaluation.selection import (
    HORIZONS,
    MIN_TRADES,
    Selection,
    Window,
    select_decision,
)
from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, run_backtest
from levibot_pipelines.core.trading.performance import (
    daily_returns,
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
    sharpe,
)

# decision model name -> probability column of the walk-forward frames
DECISION_MODELS = {
    "lgbm": "p_lgbm",
    "deep": "p_deep",
    "ensemble": "p_ensemble",
    "reversal": "p_reversal",
}


@dataclass
class DecisionBacktest:
    """``report``: JSON-ready (see ``decision_backtest``); ``returns`` and ``timestamps``: the
    concatenated test bars' net returns (shape (n,)); ``selections``: the choice of each fold."""

    report: dict
    returns: np.ndarray
    timestamps: np.ndarray
    selections: list[Selection]


def decision_window(frame: pl.DataFrame, bars: pl.DataFrame) -> Window:
    """The candles of ``frame``'s bars with every model's score and the deep uncertainty
    (``sqrt(epistemic_p)``, the std of the MC ``p``, for the deep and ensemble scores)."""
    j = frame.join(bars, on="timestamp", how="inner").sort("timestamp")
    unc = np.sqrt(j.get_column("epistemic_p").fill_null(np.nan).to_numpy())
    return Window(
        *(j.get_column(c).to_numpy() for c in ("timestamp", "open", "high", "low", "close")),
        scores={
            m: j.get_column(c).fill_null(np.nan).to_numpy() for m, c in DECISION_MODELS.items()
        },
        uncertainty={"deep": unc, "ensemble": unc},
    )


def trade_selection(sel: Selection, test: Window, costs: CostModel, size: float) -> dict:
    """The chosen policy traded on ``test``: ``net`` and ``gross`` per-bar returns (n,), the
    ``traded`` notional (both legs) and ``n_trades``; a position still open at the end is
    charged its exit leg there."""
    out: dict = {}
    signals = sel.signals(test, size=size)
    for name, model in (("net", costs), ("gross", CostModel(0.0, 0.0))):
        res = run_backtest(
            test.timestamps, test.open, test.high, test.low, test.close, signals,
            BacktestConfig(model),
        )  # fmt: skip
        r = res.returns.copy()
        if res.open_position_at_end:  # the exit leg a real book would still pay
            r[-1] -= abs(float(res.position[-1])) * (model.fee_bps + model.slippage_bps) * 1e-4
        out[name] = r
        if name == "net":
            sizes = res.trades.get_column("size").to_numpy()
            out["traded"] = float(np.sum(sizes) * 2.0)  # both legs, open ones charged at the end
            out["n_trades"] = int(res.trades.height)
    return out


def decision_backtest(
    pred: pl.DataFrame,
    selection: pl.DataFrame,
    bars: pl.DataFrame,
    costs: CostModel,
    *,
    horizons: tuple[int, ...] = HORIZONS,
    allow_short: bool = False,
    size: float = 1.0,
    bars_per_year: float = 35_040.0,
) -> DecisionBacktest:
    """Choose per fold on ``selection`` (the walk-forward's val/calib rows, column ``part``) and
    trade on ``pred`` (its test rows), on the symbol's candles ``bars`` (``timestamp, open,
    high, low, close``), with ``size`` a fraction of equity per position.

    ``report``: ``folds`` (per fold: chosen ``model``, ``horizon``, ``margin_bps``, test
    ``n_trades`` and ``net_return``), ``n_candidates`` (per fold, FLAT included),
    ``folds_traded``, ``folds_positive`` (traded and net > 0 on test), ``n_trades``,
    ``total_return`` and ``gross_total_return`` (compounded over the test bars),
    ``sharpe_daily``, ``psr`` and ``dsr`` (deflated by ``n_candidates``, on daily returns),
    ``turnover`` (traded notional per day, as ``backtest_metrics``) and ``verdict``.
    """
    check_columns(
        "pred", pred.columns, ("timestamp", "fold", "epistemic_p", *DECISION_MODELS.values())
    )
    check_columns("selection", selection.columns, ("timestamp", "fold", "part"))
    candles = bars.select("timestamp", "open", "high", "low", "close")
    folds, nets, grosses, stamps, sels, traded = [], [], [], [], [], 0.0
    for k in sorted(pred.get_column("fold").unique().to_list()):
        part = selection.filter(pl.col("fold") == k)
        fit, score = (
            decision_window(part.filter(pl.col("part") == p), candles) for p in ("val", "calib")
        )
        test = decision_window(pred.filter(pl.col("fold") == k), candles)
        sel = select_decision(fit, score, costs, horizons=horizons, allow_short=allow_short)
        res = trade_selection(sel, test, costs, size)
        folds.append(
            {
                "fold": int(k),
                "model": sel.policy.model,
                "horizon": sel.policy.horizon,
                "margin_bps": sel.policy.margin_bps,
                "n_trades": res["n_trades"],
                "net_return": float(np.prod(1.0 + res["net"]) - 1.0),
                **best_candidate(sel.table),
            }
        )
        nets.append(res["net"])
        grosses.append(res["gross"])
        stamps.append(test.timestamps)
        sels.append(sel)
        traded += res["traded"]
    r, ts = np.concatenate(nets), np.concatenate(stamps)
    report = _summary(folds, r, np.concatenate(grosses), ts, sels, traded, bars_per_year)
    return DecisionBacktest(report, r, ts, sels)


def champion_decision(
    parts: dict[str, pl.DataFrame],
    bars: pl.DataFrame,
    costs: CostModel,
    *,
    horizons: tuple[int, ...] = HORIZONS,
    allow_short: bool = False,
    size: float = 1.0,
) -> dict:
    """The decision policy published with a champion pair, JSON-ready.

    ``parts``: the newest layout's ``"val"``, ``"calib"`` and ``"test"`` bars, each a frame with
    ``timestamp``, ``epistemic_p`` and the ``DECISION_MODELS`` columns; ``bars``: the symbol's
    candles. The choice is made exactly as in each fold of ``decision_backtest`` (fit on val,
    score on calib, FLAT among the candidates); the chosen policy is then traded, frozen, on
    the test bars: an out-of-sample check that is reported and chooses nothing.

    Returns ``Selection.to_dict()`` (``policy``, ``map``, ``n_candidates``) plus
    ``best_candidate``'s keys, ``candidates`` (the selection table's rows) and ``test``
    (``n_trades``, ``net_return``, ``gross_return`` of the chosen policy on the test bars).
    """
    for name in ("val", "calib", "test"):
        if name not in parts:
            raise ValueError(f"champion_decision needs the val, calib and test parts, got "
                             f"{sorted(parts)}")  # fmt: skip
        check_columns(name, parts[name].columns, ("timestamp", "epistemic_p",
                                                  *DECISION_MODELS.values()))  # fmt: skip
    candles = bars.select("timestamp", "open", "high", "low", "close")
    fit, score, test = (decision_window(parts[p], candles) for p in ("val", "calib", "test"))
    sel = select_decision(fit, score, costs, horizons=horizons, allow_short=allow_short)
    res = trade_selection(sel, test, costs, size)
    return {
        **sel.to_dict(),
        **best_candidate(sel.table),
        "candidates": sel.table.to_dicts(),
        "test": {
            "n_trades": res["n_trades"],
            "net_return": float(np.prod(1.0 + res["net"]) - 1.0),
            "gross_return": float(np.prod(1.0 + res["gross"]) - 1.0),
        },
    }


def best_candidate(table: pl.DataFrame, min_trades: int = MIN_TRADES) -> dict:
    """What the selection saw: how many candidates passed, and the best non-flat candidate by
    t-statistic on the score window (``best``: model@horizon+margin, its t-statistic, mean net
    bps per trade and trades), so a flat fold shows how far the best idea was from passing.
    Candidates with at least ``min_trades`` trades rank first: two near-identical lucky trades
    make a t-statistic of hundreds that says nothing."""
    tried = table.filter(pl.col("model") != "flat").sort(
        pl.col("n_trades") >= min_trades, "t_stat", descending=True
    )
    best = tried.row(0, named=True) if tried.height else None
    return {
        "candidates_passed": int(table.get_column("passed").sum()),
        "best": None
        if best is None
        else f"{best['model']}@{best['horizon']}+{best['margin_bps']:g}bps",
        "best_t_stat": None if best is None else float(best["t_stat"]),
        "best_mean_net_bps": None if best is None else float(best["mean_net_bps"]),
        "best_n_trades": None if best is None else int(best["n_trades"]),
    }


def _summary(folds, r, gross, ts, sels, traded, bars_per_year) -> dict:
    _, daily = daily_returns(ts, r)
    n_candidates = sels[0].n_candidates
    traded_folds = [f for f in folds if f["model"] != "flat"]
    positive = [f for f in traded_folds if f["net_return"] > 0]
    out = {
        "folds": folds,
        "n_candidates": n_candidates,
        "folds_traded": len(traded_folds),
        "folds_positive": len(positive),
        "n_trades": int(sum(f["n_trades"] for f in folds)),
        "total_return": float(np.prod(1.0 + r) - 1.0),
        "gross_total_return": float(np.prod(1.0 + gross) - 1.0),
        "sharpe_daily": sharpe(daily, 365),
        "psr": probabilistic_sharpe_ratio(daily),
        "dsr": deflated_sharpe_ratio(daily, n_candidates),
        "turnover": traded / (r.size * 365.0 / bars_per_year),
    }
    out["verdict"] = verdict(out, len(folds))
    return out


def verdict(summary: dict, n_folds: int) -> str:
    """One line a person can act on: ``"no validated edge after costs: stayed flat in all n
    folds"`` or ``"edge after costs in k of n folds (traded in j; net Sharpe x, net total
    y%)"``."""
    if summary["folds_traded"] == 0:
        where = "its only fold" if n_folds == 1 else f"all {n_folds} folds"
        return f"no validated edge after costs: stayed flat in {where}"
    return (
        f"edge after costs in {summary['folds_positive']} of {n_folds} folds (traded in "
        f"{summary['folds_traded']}; net Sharpe {summary['sharpe_daily']:.2f}, net total "
        f"{summary['total_return']:+.2%})"
    )
