"""The policy backtest of walk-forward predictions: one symbol's out-of-sample probabilities
turned into positions by ``core.trading.policy`` and traded by ``core.trading.backtest`` on its own
candles.

Alignment: predictions exist only on test bars; the policy runs on every stored bar of the
symbol (``p`` is NaN off the test windows, which means "flat": no entry, exit any position), so
its trailing inputs (relative volatility, regime) have their full history. The backtest then
covers the bars from the first test bar to the bar after the last one, where the last signal
fills. Fills are on the candle grid, never the feature grid: after a gap in the features the next
fill is the next real bar, not the next feature row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_columns
from levibot_pipelines.core.models.inference import margin
from levibot_pipelines.core.trading.backtest import BacktestConfig, Signals, run_backtest
from levibot_pipelines.core.trading.baselines import (
    compare,
    random_distribution,
    reversal_signals,
)
from levibot_pipelines.core.trading.performance import backtest_metrics
from levibot_pipelines.core.trading.policy import PolicyConfig, policy_signals

# model -> (probability column, confidence column or None for |2p - 1|, uses deep uncertainty)
POLICY_MODELS: dict[str, tuple[str, str | None, bool]] = {
    "ensemble": ("p_ensemble", None, True),
    "lgbm": ("p_lgbm", "conf_lgbm", False),
    "deep": ("p_deep", "conf_deep", True),
}
REPORT_KEYS = (
    "sharpe",
    "sharpe_daily",
    "psr",
    "max_drawdown",
    "win_rate",
    "payoff_ratio",
    "turnover",
    "exposure",
    "n_trades",
    "costs_paid",
    "total_return",
)


@dataclass
class SymbolBacktest:
    """``report``: JSON-ready metrics (the ensemble policy at the top level); ``equity``: curves
    by name for plots; ``timestamps``: their bar open times."""

    report: dict
    equity: dict[str, np.ndarray]
    timestamps: np.ndarray


def slice_signals(signals: Signals, start: int, stop: int) -> Signals:
    return Signals(
        **{k: getattr(signals, k)[start:stop] for k in signals.__dataclass_fields__}  # type: ignore[attr-defined]
    )


def align_bars(pred: pl.DataFrame, bars: pl.DataFrame, features: pl.DataFrame) -> pl.DataFrame:
    """Every candle of the symbol with its policy inputs.

    ``pred``: walk-forward predictions (``timestamp``, ``p_*``, ``conf_*``, ``epistemic_p``);
    ``bars``: the symbol's candles (``timestamp, open, high, low, close``); ``features``: the
    symbol's feature rows (``timestamp, vol_20, ret_1``). Bars without features carry the last
    known volatility forward (the policy needs a level; ``p`` is NaN there, so no entry).
    """
    for name, frame, cols in (
        ("pred", pred, ("timestamp", "p_ensemble", "p_lgbm", "p_deep", "epistemic_p")),
        ("bars", bars, ("timestamp", "open", "high", "low", "close")),
        ("features", features, ("timestamp", "vol_20", "ret_1")),
    ):
        check_columns(name, frame.columns, cols)
    if pred.is_empty():
        raise ValueError("pred is empty: nothing to backtest")
    keep = ["timestamp", *(c for c in pred.columns if c.startswith(("p_", "conf_"))), "epistemic_p"]
    out = (
        bars.select("timestamp", "open", "high", "low", "close")
        .sort("timestamp")
        .join(features.select("timestamp", "vol_20", "ret_1"), on="timestamp", how="left")
        .join(pred.select(keep), on="timestamp", how="left")
        .with_columns(
            pl.col("vol_20").forward_fill().backward_fill(),
            pl.col("ret_1").fill_null(0.0),
        )
    )
    n_matched = out.filter(pl.col("p_ensemble").is_not_null()).height
    if n_matched != pred.height:
        raise ValueError(
            f"{pred.height - n_matched} prediction bars have no candle: predictions and candles "
            "must come from the same store"
        )
    return out


def _inputs(frame: pl.DataFrame, model: str) -> dict[str, np.ndarray | None]:
    """``policy_signals`` inputs of ``model`` (a ``POLICY_MODELS`` key), shape (n,) each, NaN
    where there is no prediction: ``p``, ``confidence`` (the model's, or the margin
    ``|2p - 1|``) and ``uncertainty`` (``sqrt(epistemic_p)``, the std of the MC ``p``, for the
    models that use it, else None)."""
    p_col, conf_col, uses_transformer = POLICY_MODELS[model]
    p = frame.get_column(p_col).fill_null(np.nan).to_numpy()
    conf = (
        margin(p) if conf_col is None else frame.get_column(conf_col).fill_null(np.nan).to_numpy()
    )
    unc = (
        np.sqrt(frame.get_column("epistemic_p").fill_null(np.nan).to_numpy())
        if uses_transformer
        else None
    )
    return {"p": p, "confidence": conf, "uncertainty": unc}


def backtest_predictions(
    pred: pl.DataFrame,
    bars: pl.DataFrame,
    features: pl.DataFrame,
    policy: PolicyConfig,
    cfg: BacktestConfig,
    *,
    seed: int = 0,
) -> SymbolBacktest:
    """Run the policy on each model's walk-forward predictions and backtest it net of costs,
    next to buy-and-hold, flat, the reversal rule (``reversal_rule``, short only when
    ``policy.allow_short``), a random policy with the same turnover (one seed,
    ``random_same_turnover``, and its distribution over seeds, ``random_distribution``), and
    2x costs."""
    frame = align_bars(pred, bars, features)
    ts = frame.get_column("timestamp").to_numpy().astype(np.int64)
    start, stop = _test_span(ts, pred)
    prices = [frame.get_column(c).to_numpy()[start:stop] for c in ("open", "high", "low", "close")]
    span_ts = ts[start:stop]
    report: dict = {}
    equity: dict[str, np.ndarray] = {}
    for model in POLICY_MODELS:
        out = policy_signals(
            **_inputs(frame, model),
            volatility=frame.get_column("vol_20").to_numpy(),
            ret_1=frame.get_column("ret_1").to_numpy(),
            cfg=policy,
        )
        cmp = compare(span_ts, *prices, slice_signals(out.signals, start, stop), cfg, seed=seed)
        equity[model] = cmp["policy"].result.equity
        report[model] = _model_report(cmp, int(out.blocked_uncertain[start:stop].sum()))
        report[model]["random_distribution"] = random_distribution(
            span_ts, prices[0], prices[3], cmp["policy"].result, cfg, seed=seed
        )
        if "buy_and_hold" not in report:  # the same for every model: kept from the first
            report["buy_and_hold"] = _pick(cmp["buy_and_hold"].metrics)
            report["flat"] = _pick(cmp["flat"].metrics)
            rule = reversal_signals(prices[3], allow_short=policy.allow_short)
            report["reversal_rule"] = _pick(
                backtest_metrics(run_backtest(span_ts, *prices, rule, cfg), cfg)
            )
            equity["buy_and_hold"] = cmp["buy_and_hold"].result.equity
    top = report.pop("ensemble")
    return SymbolBacktest(
        report={
            **top,
            "models": {m: report.pop(m) for m in ("lgbm", "deep")},
            **report,
            "start_ms": int(span_ts[0]),
            "end_ms": int(span_ts[-1]),
            "n_bars": len(span_ts),
            "costs": {"fee_bps": cfg.costs.fee_bps, "slippage_bps": cfg.costs.slippage_bps},
            "policy": {k: getattr(policy, k) for k in policy.__dataclass_fields__},  # type: ignore[attr-defined]
        },
        equity=equity,
        timestamps=span_ts,
    )


def _test_span(ts: np.ndarray, pred: pl.DataFrame) -> tuple[int, int]:
    """Row range ``[start, stop)`` of the candle timestamps ``ts`` (sorted, ms) from the first
    prediction bar to the bar after the last one, where its signal fills (cut at the end)."""
    first, last = int(pred.get_column("timestamp").min()), int(pred.get_column("timestamp").max())
    start = int(np.searchsorted(ts, first))
    stop = min(int(np.searchsorted(ts, last)) + 2, len(ts))  # + the bar the last signal fills in
    return start, stop


def _model_report(cmp: dict, blocked: int) -> dict:
    """One model's policy metrics next to the random policy of the same turnover, the policy
    at 2x costs and gross of costs (``baselines.compare``'s ``cmp``), and the count of entries
    ``blocked`` by the uncertainty cap."""
    return {
        **_pick(cmp["policy"].metrics),
        "random_same_turnover": _pick(cmp["random"].metrics),
        "at_2x_costs": _pick(cmp["policy_2x_costs"].metrics),
        "gross_of_costs": _pick(cmp["policy_gross"].metrics),
        "blocked_by_uncertainty": blocked,
    }


def _pick(metrics: dict) -> dict:
    return {k: metrics[k] for k in REPORT_KEYS if k in metrics}
