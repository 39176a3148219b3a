"""What ``levibot demo`` and ``levibot status`` show, read from ``LEVIBOT_HOME`` as tables.

Reads only: the stored bars and the feature table (``adapters.store``), the DuckDB views, each
symbol's ``report.json`` and ``ensemble.json`` (``adapters.home``) and the published
predictions (``adapters.prediction_files``). Returns polars DataFrames (floats rounded for
display) and small records; the CLI prints them. Times are ms UTC; staleness is in minutes of
data time (``core.data.timeframes.staleness_minutes``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from levibot_pipelines.adapters.home import ensemble_weights_path, report_key
from levibot_pipelines.adapters.object_store import DataRoot, as_root, read_json
from levibot_pipelines.adapters.prediction_files import latest_key, read_latest
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.timeframes import staleness_minutes, utc_text

STATUS_COLUMNS = ["asset", "rows", "newest_bar", "staleness_min"]
METRIC_COLUMNS = ("auc", "log_loss", "brier", "bss", "ece")
BACKTEST_COLUMNS = ("sharpe", "psr", "max_drawdown", "n_trades", "costs_paid")
# (row label, key of the report's backtest entry; None: the policy itself)
BACKTEST_STRATEGIES: tuple[tuple[str, str | None], ...] = (
    ("policy (ensemble)", None),
    ("  gross of costs", "gross_of_costs"),
    ("  at 2x costs", "at_2x_costs"),
    ("  random, same turnover", "random_same_turnover"),
    ("buy and hold", "buy_and_hold"),
)
PREDICTION_COLUMNS = (
    "ensemble_p_up",
    "deep_p_up",
    "lgbm_p_up",
    "deep_sigma",
    "regime",
    "signal",
    "size",
    "kill_switch",
    "decision_model",
)
NEWEST_FEATURES_SQL = (
    "SELECT symbol, to_timestamp(timestamp / 1000) AS bar_open, close, ret_1, "
    "ema_20, z_20, vol_20, ratio_BTC_ETH, lead_ret_BTC FROM cross_asset_features "
    "QUALIFY row_number() OVER "
    "(PARTITION BY symbol ORDER BY timestamp DESC) = 1 ORDER BY symbol"
)


@dataclass(frozen=True)
class ModelStatus:
    """One symbol's champions and walk-forward test metrics (from ``report.json`` and
    ``ensemble.json``). Versions are ``"?"`` and ``w_lgbm`` NaN while no ensemble is fitted;
    ``metrics`` has one row per model: ``model`` and ``METRIC_COLUMNS`` (rounded to 4).
    Two different ensemble weights: ``w_lgbm`` is the champions' (``ensemble.json``, what is
    published); ``report_w_lgbm`` the weight each report fold fitted for its own models (what
    the ``ensemble`` row of ``metrics`` used), oldest fold first, empty when not recorded."""

    symbol: str
    n_test: int
    folds: int
    lgbm_version: str
    deep_version: str
    w_lgbm: float
    metrics: pl.DataFrame
    report_w_lgbm: tuple[float, ...] = ()


@dataclass(frozen=True)
class PublishedStatus:
    """The published latest predictions: the file's ``path``, one ``table`` row per symbol
    (``symbol``, ``as_of`` = bar close time, ``PREDICTION_COLUMNS``; floats rounded to 4), the
    distinct non-empty kill-switch reasons, sorted, and each symbol's decision reason."""

    path: Path | str  # a Path under the home, or an s3:// URL
    table: pl.DataFrame
    kill_switch_reasons: list[str]
    decision_reasons: dict[str, str]


def data_status(
    store: ParquetStore, symbols: Sequence[str], tf_ms: int, now_ms: int
) -> pl.DataFrame:
    """Per symbol ``ohlcv[SYMBOL]`` and then ``cross_asset_features`` (when built): stored
    rows, newest bar (UTC text) and data-time staleness at ``now_ms`` (minutes, 1 decimal).
    Columns ``STATUS_COLUMNS``."""
    rows = []
    for symbol in symbols:
        ts = store.timestamps(symbol)
        last = ts.max() if ts.len() else None
        stale = staleness_minutes(last, now_ms, tf_ms)
        rows.append((f"ohlcv[{symbol}]", ts.len(), utc_text(last), stale))
    if store.has_features():
        feats = store.read_features(columns=["timestamp"])
        n, last = feats.height, feats.get_column("timestamp").max()
        stale = staleness_minutes(last, now_ms, tf_ms)
        rows.append(("cross_asset_features", n, utc_text(last), stale))
    return pl.DataFrame(rows, schema=STATUS_COLUMNS, orient="row").with_columns(
        pl.col("staleness_min").round(1)
    )


def newest_feature_rows(warehouse_path: Path) -> pl.DataFrame:
    """The newest row per symbol of the DuckDB view ``cross_asset_features`` (a few columns,
    ``bar_open`` as a timestamp), ordered by symbol. Opens the warehouse read-only."""
    import duckdb

    with duckdb.connect(str(warehouse_path), read_only=True) as conn:
        return conn.sql(NEWEST_FEATURES_SQL).pl()


def _symbol_report(where: Path | DataRoot, symbol: str) -> dict[str, Any] | None:
    """``report.json``'s entry for ``symbol`` in ``where`` (the home or the data root); None
    when there is no report yet."""
    doc = read_json(where, report_key(symbol))
    return None if doc is None else doc["symbols"][symbol]


def model_status(
    home: Path, symbols: Sequence[str], root: DataRoot | None = None
) -> dict[str, ModelStatus | None]:
    """Per symbol (in order) its :class:`ModelStatus`; None when it has no report yet. The
    reports are read from ``root`` (default: the home), ``ensemble.json`` from the home."""
    out: dict[str, ModelStatus | None] = {}
    for symbol in symbols:
        rep = _symbol_report(home if root is None else root, symbol)
        if rep is None:
            out[symbol] = None
            continue
        ensemble_path = ensemble_weights_path(home, symbol)
        ens = json.loads(ensemble_path.read_text()) if ensemble_path.exists() else {}
        metrics = pl.DataFrame(
            [
                {"model": name, **{k: m[k] for k in METRIC_COLUMNS}}
                for name, m in rep["models"].items()
            ]
        ).with_columns(pl.col(pl.Float64).round(4))
        out[symbol] = ModelStatus(
            symbol=symbol,
            n_test=rep["n_test"],
            folds=rep["folds"],
            lgbm_version=ens.get("lgbm_version", "?"),
            deep_version=ens.get("deep_version", "?"),
            w_lgbm=ens.get("w_lgbm", float("nan")),
            metrics=metrics,
            report_w_lgbm=tuple(
                float(fold["ensemble_weight_lgbm"])
                for fold in rep.get("fold_details", [])
                if "ensemble_weight_lgbm" in fold
            ),
        )
    return out


def backtest_table(where: Path | DataRoot, symbols: Sequence[str]) -> pl.DataFrame | None:
    """Per symbol with a report holding a backtest, one row per ``BACKTEST_STRATEGIES`` entry:
    ``symbol``, ``strategy``, ``BACKTEST_COLUMNS`` and ``total_return`` (net of costs unless
    the label says otherwise; floats rounded to 4). None when no symbol has one."""
    rows = []
    for symbol in symbols:
        rep = _symbol_report(where, symbol)
        bt = rep.get("backtest") if rep is not None else None
        if not bt:
            continue
        for name, key in BACKTEST_STRATEGIES:
            m = bt if key is None else bt[key]
            rows.append(
                {
                    "symbol": symbol,
                    "strategy": name,
                    **{k: m.get(k) for k in BACKTEST_COLUMNS},
                    "total_return": m.get("total_return"),
                }
            )
    if not rows:
        return None
    return pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(4))


def decision_verdicts(where: Path | DataRoot, symbols: Sequence[str]) -> dict[str, str]:
    """Per symbol with a report holding the decision engine's result, its verdict line
    (``core.evaluation.decision_walk.verdict``)."""
    out = {}
    for symbol in symbols:
        rep = _symbol_report(where, symbol)
        decision = rep.get("decision") if rep is not None else None
        if decision and "verdict" in decision:
            out[symbol] = decision["verdict"]
    return out


def published_status(where: Path | DataRoot) -> PublishedStatus | None:
    """The published latest predictions in ``where`` (the home or the data root) as a
    :class:`PublishedStatus`; None when nothing is published yet."""
    latest = read_latest(where)
    if latest is None:
        return None
    table = (
        pl.DataFrame(list(latest.rows.values()))
        .select(
            "symbol",
            pl.from_epoch("bar_close_time", time_unit="ms").alias("as_of"),
            *PREDICTION_COLUMNS,
        )
        .with_columns(pl.col(pl.Float64).round(4))
    )
    reasons = {r["kill_switch_reason"] for r in latest.rows.values() if r["kill_switch_reason"]}
    return PublishedStatus(
        path=as_root(where).ref(latest_key()),
        table=table,
        kill_switch_reasons=sorted(reasons),
        decision_reasons={s: r["decision_reason"] for s, r in latest.rows.items()},
    )
