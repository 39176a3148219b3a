"""Live scoring: what was really published, scored once its outcome is known.

A published row (``adapters.prediction_files``) for bar ``t`` (``bar_time``, open time ms UTC)
holds each model's ``P(up)`` of ``t -> t + h`` (``h``: the label horizon). Its label is the
training label, computed by the same code (``core.data.features.forward_return`` and
``direction_label``) on the symbol's stored bars: ``fwd_ret = log(close[t + h] / close[t])``,
``y_up = fwd_ret > 0``. A row matures when bar ``t + h`` is stored with none of the bars between
missing (as in training, a label never spans a gap); before that it is not scored.

Once per bar: each ``(symbol, bar_time, horizon)`` is scored once, from the FIRST row published
for that bar (lowest ``published_at``): what was really said first. A later republish of the
same bar is never scored again, nor does it replace the first row.

Rolling scores: per symbol the newest ``window`` matured bars (by ``bar_time``), per model in
``LIVE_MODELS`` (the shadow challengers' published rows, scored the same way, as
``SHADOW_MODELS``): ``n``, ``auc`` (``core.metrics.auc``), ``log_loss``, ``brier``, ``ece`` (15
uniform bins, as in the report), ``ic`` (Spearman of ``p`` with ``fwd_ret``, as
``core.evaluation.skill``); ``auc`` / ``ic`` are None where undefined (one class; a constant).

Noise band (``noise_band``): live skill is below the walk-forward test skill when
``live_auc < wf_auc - band`` with ``band = Z * sqrt(h * (se_live**2 + se_wf**2))``: ``se`` is the
Hanley-McNeil (1982) standard error of an AUC, live from its own up/down counts, walk-forward
from the report's ``n_test`` split evenly (the report keeps no class counts); the factor ``h``
inflates both variances for overlapping labels (consecutive ``h``-bar labels share ``h - 1``
bars: about ``n / h`` independent ones); ``Z = 1.96`` (a 2.5% one-sided false alarm rate for
independent samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.checks import check_int, check_range
from levibot_pipelines.core.data.features import direction_label, forward_return
from levibot_pipelines.core.evaluation.skill import resample_stats
from levibot_pipelines.core.metrics import auc, brier, ece, log_loss
from levibot_pipelines.core.trading.backtest import BacktestConfig, Signals
from levibot_pipelines.core.trading.paper import HISTORY_COLUMNS, replay

LIVE_MODELS: tuple[str, ...] = ("deep", "lgbm", "ensemble")
# The shadow challengers' rows (published/shadow) are scored the same way, under these names.
SHADOW_MODELS: tuple[str, ...] = tuple(f"shadow_{m}" for m in LIVE_MODELS)
P_COLUMNS: dict[str, str] = {m: f"{m}_p_up" for m in LIVE_MODELS}
Z = 1.96
KEYS = ("symbol", "bar_time", "horizon")
SCORED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "bar_time": pl.Int64(),  # open time of the predicted bar t, ms UTC
    "horizon": pl.Int64(),  # label horizon h in bars
    "published_at": pl.Int64(),  # the first publish of the bar, ms UTC
    "outcome_time": pl.Int64(),  # open time of bar t + h, whose close settles the label
    "close": pl.Float64(),  # stored close of t
    "outcome_close": pl.Float64(),  # stored close of t + h
    "fwd_ret": pl.Float64(),
    "y_up": pl.Int8(),
    **{c: pl.Float64() for c in P_COLUMNS.values()},
    "scored_at": pl.Int64(),  # when this row was scored, ms UTC
}


def first_published(history: pl.DataFrame) -> pl.DataFrame:
    """One row per ``(symbol, bar_time)``: the first published (lowest ``published_at``; among
    equal stamps the first in ``history``'s order)."""
    return history.sort("published_at", maintain_order=True).unique(
        ["symbol", "bar_time"], keep="first", maintain_order=True
    )


def outcomes(bars: pl.DataFrame, *, tf_ms: int, horizon: int) -> pl.DataFrame:
    """Every bar of ONE symbol's ``bars`` (``timestamp``, ``close``; unique timestamps) whose
    label is known: ``bar_time``, ``outcome_time`` (= ``bar_time + h * tf_ms``), ``close``,
    ``outcome_close``, ``fwd_ret``, ``y_up`` (module docstring); ``tf_ms``: bar length in ms."""
    h = check_int("horizon", horizon, 1)
    check_int("tf_ms", tf_ms, 1)
    b = bars.select(pl.col("timestamp").cast(pl.Int64), pl.col("close").cast(pl.Float64))
    b = b.sort("timestamp")
    if b.get_column("timestamp").is_duplicated().any():
        raise ValueError("bars must have unique timestamps (one symbol's stored bars)")
    ts = pl.col("timestamp")
    ahead = ts.shift(-h) == ts + h * tf_ms
    return (
        b.with_columns(forward_return(pl.col("close"), h, ahead))
        .with_columns(direction_label(pl.col("fwd_ret")))
        .with_columns(outcome_time=ts + h * tf_ms, outcome_close=pl.col("close").shift(-h))
        .filter(pl.col("fwd_ret").is_not_null())
        .rename({"timestamp": "bar_time"})
    )


def newly_matured(
    history: pl.DataFrame,
    bars: Mapping[str, pl.DataFrame],
    scored: pl.DataFrame,
    *,
    tf_ms: int,
    horizon: int,
    scored_at: int,
) -> pl.DataFrame:
    """The published rows (``history``: every published row) that matured and are not in
    ``scored`` yet (by ``KEYS``), one per bar, as ``SCORED_SCHEMA`` rows sorted by symbol and
    ``bar_time``. ``bars``: symbol -> its stored bars; a symbol without bars scores nothing."""
    first = first_published(history)
    parts = []
    for symbol, sym_bars in bars.items():
        rows = first.filter(pl.col("symbol") == symbol)
        if rows.is_empty() or sym_bars.is_empty():
            continue
        known = outcomes(sym_bars, tf_ms=tf_ms, horizon=horizon)
        parts.append(
            rows.select("symbol", "bar_time", "published_at", *P_COLUMNS.values()).join(
                known, on="bar_time", how="inner"
            )
        )
    if not parts:
        return pl.DataFrame(schema=SCORED_SCHEMA)
    new = pl.concat(parts).with_columns(
        horizon=pl.lit(horizon, pl.Int64), scored_at=pl.lit(scored_at, pl.Int64)
    )
    new = new.select(list(SCORED_SCHEMA)).cast(SCORED_SCHEMA)
    done = (
        scored.filter(pl.col("horizon") == horizon)
        .select(KEYS)
        .cast({k: SCORED_SCHEMA[k] for k in KEYS})
    )
    return new.join(done, on=list(KEYS), how="anti").sort("symbol", "bar_time")


def latest_window(scored: pl.DataFrame, symbol: str, horizon: int, window: int) -> pl.DataFrame:
    """``symbol``'s newest ``window`` scored rows of ``horizon``, oldest first."""
    check_int("window", window, 1)
    rows = scored.filter((pl.col("symbol") == symbol) & (pl.col("horizon") == horizon))
    return rows.sort("bar_time").tail(window)


def _ic(y: np.ndarray, r: np.ndarray, p: np.ndarray) -> float | None:
    ic = float(resample_stats(y, r, p, np.ones((1, y.size)))["ic"][0])
    return ic if math.isfinite(ic) else None


def window_scores(rows: pl.DataFrame) -> dict[str, dict]:
    """Per model of ``LIVE_MODELS`` the scores of ``rows`` (one symbol's window,
    ``SCORED_SCHEMA``): ``n``, ``n_up``, ``auc``, ``log_loss``, ``brier``, ``ece``, ``ic``
    (None where undefined; every score None when ``rows`` is empty)."""
    y = rows.get_column("y_up").cast(pl.Float64).to_numpy()
    r = rows.get_column("fwd_ret").to_numpy()
    n, n_up = int(y.size), int(y.sum())
    out: dict[str, dict] = {}
    for model, col in P_COLUMNS.items():
        s: dict = {"n": n, "n_up": n_up}
        if n == 0:
            out[model] = s | dict.fromkeys(("auc", "log_loss", "brier", "ece", "ic"))
            continue
        p = rows.get_column(col).to_numpy()
        s["auc"] = auc(y, p) if 0 < n_up < n else None
        s |= {"log_loss": log_loss(y, p), "brier": brier(y, p), "ece": ece(y, p)}
        s["ic"] = _ic(y, r, p) if n > 1 else None
        out[model] = s
    return out


def shadow_window_scores(rows: pl.DataFrame) -> dict[str, dict]:
    """``window_scores`` of the shadow challengers' scored ``rows``, keyed by ``SHADOW_MODELS``
    (``shadow_deep``, ``shadow_lgbm``, ``shadow_ensemble``)."""
    return {f"shadow_{m}": s for m, s in window_scores(rows).items()}


def rolling_auc(
    rows: pl.DataFrame, window: int, min_bars: int = 10
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(bar_times, {model: auc})``: at each bar of ``rows`` (one symbol's scored rows, oldest
    first) the AUC of the ``window`` bars ending there; bars with fewer than ``min_bars`` bars
    behind them, or with one class in their window, are left out (the same for every model)."""
    check_int("window", window, 1)
    y = rows.get_column("y_up").cast(pl.Float64).to_numpy()
    ps = {m: rows.get_column(c).to_numpy() for m, c in P_COLUMNS.items()}
    keep, curves = [], {m: [] for m in LIVE_MODELS}
    for i in range(min_bars - 1, y.size):
        lo = max(0, i + 1 - window)
        yw = y[lo : i + 1]
        if 0 < yw.sum() < yw.size:
            keep.append(i)
            for m in LIVE_MODELS:
                curves[m].append(auc(yw, ps[m][lo : i + 1]))
    times = rows.get_column("bar_time").to_numpy()[keep]
    return times, {m: np.asarray(v, dtype=np.float64) for m, v in curves.items()}


def hanley_mcneil_se(area: float, n_pos: int, n_neg: int) -> float:
    """Standard error of an AUC ``area`` from ``n_pos`` positives and ``n_neg`` negatives
    (Hanley & McNeil 1982): ``Q1 = A / (2 - A)``, ``Q2 = 2 A^2 / (1 + A)``, ``SE^2 = (A (1 - A)
    + (n_pos - 1)(Q1 - A^2) + (n_neg - 1)(Q2 - A^2)) / (n_pos n_neg)``."""
    a = float(check_range(area, "auc", 0.0, 1.0))
    n1, n2 = check_int("n_pos", n_pos, 1), check_int("n_neg", n_neg, 1)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    var = (a * (1.0 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
    return math.sqrt(max(var, 0.0))


@dataclass(frozen=True)
class NoiseBand:
    """The comparison of a live AUC with the walk-forward test AUC (module docstring)."""

    live_se: float
    wf_se: float
    band: float
    threshold: float  # wf_auc - band
    below: bool  # live_auc < threshold


def noise_band(
    live_auc: float, n_up: int, n_down: int, wf_auc: float, wf_n: int, horizon: int, z: float = Z
) -> NoiseBand:
    """``band = z * sqrt(horizon * (se_live^2 + se_wf^2))`` (module docstring); ``n_up`` /
    ``n_down``: the live window's up and down bars; ``wf_n``: the report's test bars (>= 2)."""
    h = check_int("horizon", horizon, 1)
    check_int("wf_n", wf_n, 2)
    live_se = hanley_mcneil_se(live_auc, n_up, n_down)
    wf_se = hanley_mcneil_se(wf_auc, wf_n // 2, wf_n - wf_n // 2)
    band = z * math.sqrt(h * (live_se**2 + wf_se**2))
    return NoiseBand(live_se, wf_se, band, wf_auc - band, live_auc < wf_auc - band)


NO_INTENT = Signals(
    np.zeros(1, dtype=np.int8),
    np.zeros(1),
    np.full(1, np.nan),
    np.full(1, np.nan),
    np.zeros(1, dtype=bool),
    np.zeros(1, dtype=bool),
)


def paper_pnl(
    candles: pl.DataFrame, history: pl.DataFrame, since: int, cfg: BacktestConfig
) -> float | None:
    """Net return (a ratio: 0.01 = +1%) of the paper book from the close of bar ``since`` (ms
    UTC) to the close of the newest candle, marked to market, net of ``cfg``'s fees and slippage.

    The paper book is the publisher's (``core.trading.paper.replay``): ``history``'s published
    decisions of one symbol (a bar published twice counts once, its latest publish, as the
    publisher replays it) filled at the next open on ``candles`` (one symbol's stored bars),
    with no decision at the newest candle (it could not fill yet). None when there are no
    candles or ``since`` is not a candle of the book (from the first published bar on).
    """
    candles = candles.sort("timestamp")
    ts = candles.get_column("timestamp").to_numpy().astype(np.int64)
    if ts.size == 0:
        return None
    past = (
        history.sort("published_at", maintain_order=True)
        .unique("bar_time", keep="last", maintain_order=True)
        .select(HISTORY_COLUMNS)
    )
    book = replay(candles, ts, past, int(ts[-1]), NO_INTENT, cfg)
    at = np.flatnonzero(np.asarray(book.timestamps) == since)
    if at.size == 0:
        return None
    equity = np.asarray(book.equity)
    return float(equity[-1] / equity[at[0]] - 1.0)
