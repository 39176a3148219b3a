"""Live scoring of the published predictions: score what matured, keep it, summarize it.

``score_matured`` reads every published row (``adapters.prediction_files.read_history``), each
symbol's stored bars (``adapters.store``) and the scored history (``adapters.live_files``); it
scores the rows whose label matured since the last run (``core.evaluation.live_scoring``: the
first published row of each bar, the training label), appends them as ONE new file, and
replaces ``live/summary.json``: per symbol the rolling scores of its newest ``window`` matured
bars per model, each compared with the walk-forward test AUC of the symbol's ``report.json`` by
the noise band, and the paper P&L over that window (``live_scoring.paper_pnl``). Idempotent: a
run that finds no newly matured bar appends nothing.

The shadow challengers' published rows (``published/shadow``) are scored the same way into
their own history (``live/shadow_scores``) and summarized beside the champions' as
``shadow_deep``, ``shadow_lgbm``, ``shadow_ensemble`` (newest ``window`` matured shadow bars; no
noise band: the walk-forward report is the champions'); a symbol never shadowed has none.

A live recalibration map in its shadow period (``usecases.recalibration``) is scored beside them
as ``recal_deep``, ``recal_lgbm``, ``recal_ensemble``: its recalibrated probability on the
newest ``window`` bars matured after its fit (no noise band); none without a candidate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from levibot_pipelines.adapters.home import report_key
from levibot_pipelines.adapters.live_files import read_scores, write_scores, write_summary
from levibot_pipelines.adapters.object_store import DataRoot, as_root, open_root, read_json
from levibot_pipelines.adapters.prediction_files import read_history
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.evaluation.live_scoring import (
    KEYS,
    LIVE_MODELS,
    latest_window,
    newly_matured,
    noise_band,
    paper_pnl,
    rolling_auc,
    shadow_window_scores,
    window_scores,
)
from levibot_pipelines.core.trading.backtest import BacktestConfig
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.recalibration import candidate_scores
from levibot_pipelines.usecases.report import backtest_config

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("n", "auc", "log_loss", "brier", "ece", "ic", "wf_auc", "threshold", "below")


@dataclass(frozen=True)
class LiveConfig:
    """What scoring needs from the settings: the configured ``symbols``, the bar length
    ``tf_ms`` (ms), the label ``horizon`` (bars), the rolling ``window`` (matured bars) and
    each symbol's costs (``costs[symbol]``, the publisher's ``BacktestConfig``) and the
    ``data_url`` of the published rows, bars and reports (None: the home)."""

    symbols: tuple[str, ...]
    tf_ms: int
    horizon: int
    window: int
    costs: dict[str, BacktestConfig]
    data_url: str | None = None


def live_config(s: Settings) -> LiveConfig:
    """The ``LiveConfig`` of ``s`` (``LEVIBOT_LABEL_HORIZON``, ``LEVIBOT_LIVE_WINDOW``, costs)."""
    return LiveConfig(
        symbols=s.market.symbols,
        tf_ms=s.market.timeframe_ms,
        horizon=s.models.label_horizon,
        window=s.serving.live_window,
        costs={sym: backtest_config(s, sym) for sym in s.market.symbols},
        data_url=s.market.data_url,
    )


@dataclass(frozen=True)
class LiveScoresResult:
    """One scoring run: ``new_rows`` scored and the ``path`` of the file holding them (None
    when none), the ``summary`` written to ``live/summary.json``, ``table`` (one row per
    symbol and model: ``TABLE_COLUMNS``), per symbol the ``rolling`` AUC of the newest window
    (``core.evaluation.live_scoring.rolling_auc``) and ``notes`` (what could not be scored)."""

    new_rows: int
    path: Path | None
    summary: dict[str, Any]
    table: pl.DataFrame
    rolling: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]
    notes: list[str] = field(default_factory=list)
    new_shadow_rows: int = 0  # newly matured shadow rows scored (live/shadow_scores)


def walk_forward_auc(where: Path | DataRoot, symbol: str) -> tuple[int, dict[str, float]] | None:
    """``(n_test, {model: test AUC})`` of ``symbol``'s ``report.json`` in ``where`` (the home or
    a data root); None without a report. ``ValueError`` naming the file when it is
    unreadable."""
    try:
        doc = read_json(where, report_key(symbol))
        if doc is None:
            return None
        rep = doc["symbols"][symbol]
        return int(rep["n_test"]), {m: rep["models"][m]["auc"] for m in LIVE_MODELS}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        path = as_root(where).location(report_key(symbol))
        raise ValueError(
            f"{path}: no walk-forward test AUC ({type(exc).__name__}: {exc})"
        ) from None


def _symbol_summary(
    rows: pl.DataFrame, n_total: int, wf: tuple[int, dict[str, float]] | None, horizon: int
) -> dict:
    models = window_scores(rows)
    for model, s in models.items():
        s |= {"wf_auc": None, "noise_band": None, "threshold": None, "below": False}
        wf_auc = wf[1].get(model) if wf else None
        if wf is None or wf_auc is None or wf[0] < 2 or s["auc"] is None:
            continue
        band = noise_band(s["auc"], s["n_up"], s["n"] - s["n_up"], wf_auc, wf[0], horizon)
        s |= {"wf_auc": wf_auc, "noise_band": band.band, "threshold": band.threshold}
        s["below"] = band.below
    times = rows.get_column("bar_time")
    return {
        "n_matured": n_total,
        "first_bar": times.min() if rows.height else None,
        "last_bar": times.max() if rows.height else None,
        "wf_n_test": wf[0] if wf else None,
        "paper_pnl_ratio": None,
        "models": models,
    }


def _score_new(
    home: Path,
    root: DataRoot,
    cfg: LiveConfig,
    bars: dict[str, pl.DataFrame],
    now_ms: int,
    *,
    shadow: bool,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, Path | None]:
    """``(history, every scored row, the new ones, their file)`` of the champions' published
    rows (in ``root``), or with ``shadow`` of the shadow challengers': the newly matured rows
    are appended (under the ``home``)."""
    history, scored = read_history(root, shadow=shadow), read_scores(home, shadow=shadow)
    new = newly_matured(
        history, bars, scored, tf_ms=cfg.tf_ms, horizon=cfg.horizon, scored_at=now_ms
    )
    path = write_scores(home, new, now_ms, shadow=shadow)
    scored = pl.concat([scored, new]).unique(list(KEYS), keep="first", maintain_order=True)
    return history, scored, new, path


def _add_shadow(entry: dict, shadow_window: pl.DataFrame) -> None:
    """Add the shadow challengers' scores of ``shadow_window`` to a symbol's summary ``entry``
    (none when it is empty), without a noise band."""
    if shadow_window.is_empty():
        return
    _add_scores(entry, shadow_window_scores(shadow_window))


def _add_scores(entry: dict, scores: dict[str, dict]) -> None:
    """Add ``scores`` (model -> window scores) to a symbol's summary ``entry``, without a
    noise band."""
    for model, s in scores.items():
        entry["models"][model] = s | {
            "wf_auc": None,
            "noise_band": None,
            "threshold": None,
            "below": False,
        }


def _table(symbols: dict[str, dict]) -> pl.DataFrame:
    rows = [
        {"symbol": sym, "model": m, **{k: s.get(k) for k in TABLE_COLUMNS}}
        for sym, entry in symbols.items()
        for m, s in entry["models"].items()
    ]
    types = {"n": pl.Int64, "below": pl.Boolean}
    schema = {"symbol": pl.String, "model": pl.String}
    schema |= {k: types.get(k, pl.Float64) for k in TABLE_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def score_matured(home: Path, cfg: LiveConfig, now_ms: int) -> LiveScoresResult:
    """Score the newly matured published predictions under ``home`` at ``now_ms`` (ms UTC),
    append them, and rewrite the summary (module docstring)."""
    root = open_root(cfg.data_url, home)
    store = ParquetStore(home, root)
    bars = {sym: store.read_ohlcv(sym) for sym in cfg.symbols}
    history, scored, new, path = _score_new(home, root, cfg, bars, now_ms, shadow=False)
    _, shadow_scored, new_shadow, _ = _score_new(home, root, cfg, bars, now_ms, shadow=True)
    symbols: dict[str, dict] = {}
    rolling: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    notes: list[str] = []
    recal = candidate_scores(home, scored, history, cfg.horizon, cfg.window, notes)
    for sym in cfg.symbols:
        try:
            wf = walk_forward_auc(root, sym)
        except ValueError as exc:
            wf = None
            notes.append(str(exc))
        window = latest_window(scored, sym, cfg.horizon, cfg.window)
        n_total = scored.filter(
            (pl.col("symbol") == sym) & (pl.col("horizon") == cfg.horizon)
        ).height
        symbols[sym] = _symbol_summary(window, n_total, wf, cfg.horizon)
        _add_shadow(symbols[sym], latest_window(shadow_scored, sym, cfg.horizon, cfg.window))
        _add_scores(symbols[sym], recal.get(sym, {}))
        if window.height:
            symbols[sym]["paper_pnl_ratio"] = _pnl(bars[sym], history, sym, window, cfg, notes)
            tail = latest_window(scored, sym, cfg.horizon, 2 * cfg.window)
            times, curves = rolling_auc(tail, cfg.window)
            keep = times >= window.get_column("bar_time")[0]
            rolling[sym] = (times[keep], {m: v[keep] for m, v in curves.items()})
    summary = {
        "updated_at": now_ms,
        "window": cfg.window,
        "horizon": cfg.horizon,
        "symbols": symbols,
    }
    write_summary(home, summary)
    for note in notes:
        log.warning(note)
    table = _table(symbols)
    return LiveScoresResult(new.height, path, summary, table, rolling, notes, new_shadow.height)


def _pnl(
    candles: pl.DataFrame,
    history: pl.DataFrame,
    symbol: str,
    window: pl.DataFrame,
    cfg: LiveConfig,
    notes: list[str],
) -> float | None:
    """The paper P&L of ``symbol`` since the close of its window's oldest bar; None (with a
    note) when the replay fails."""
    since = int(window.get_column("bar_time")[0])
    try:
        return paper_pnl(
            candles, history.filter(pl.col("symbol") == symbol), since, cfg.costs[symbol]
        )
    except ValueError as exc:
        notes.append(f"{symbol}: paper P&L not computed: {exc}")
        return None
