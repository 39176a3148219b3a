"""Published predictions: the file format shared by the publisher and every reader.

Layout under ``published/`` of the data root (``adapters.object_store``: the home, or the bucket
prefix of ``LEVIBOT_DATA_URL``; ``models/`` is always under the local home):

- ``latest_predictions.parquet`` and its JSON twin ``latest_predictions.json``
  (``{"published_at": ms, "schema_version": 2, "rows": [{column: value}, ...]}``), one row per
  symbol, each replaced atomically (temporary sibling + ``os.replace``, or one whole PUT).
- ``history/predictions-{published_at}-{uuid8}.parquet``: one file per publish, never rewritten.
- ``models/{SYMBOL}/deep/`` (a symlink to ``deep-v{version}-{uuid8}/``): the Transformer the rows
  were computed with (``adapters.exported_model``), so the API can rerun MC dropout without
  MLflow or DuckDB.

- ``shadow/latest_predictions.{parquet,json}`` and ``shadow/history/``: the shadow challengers
  (``write_shadow``), the same schema and write order without model files, a row per symbol
  with a challenger, each row HOLD at size 0 and flat (never traded; nothing reads them into
  the paper position or the kill-switch). ``remove_shadow`` removes the latest files (JSON
  first) when no challenger is left; the shadow history stays.

Write order: model files (a new version directory, then its pointer), then the history file,
then the Parquet, then the JSON (what the API reads). A reader that finds a row therefore also
finds its model; a reader that loads a model checks ``meta.json`` against the row's
``deep_version``, because the model pointer moves before the rows are replaced.

Time alignment of a row: ``bar_time`` is the open time (ms UTC) of the newest closed bar ``t``;
the prediction is for ``t -> t + h`` and is made at its close, ``bar_close_time``.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from levibot_pipelines.adapters.exported_model import (
    PublishedFileError,
    check_exported_models,
    write_exported_model,
)
from levibot_pipelines.adapters.home import (
    HISTORY,
    HISTORY_FILE_PREFIX,
    PUBLISHED,
    SHADOW,
    SHADOW_HISTORY,
)
from levibot_pipelines.adapters.object_store import DataRoot, LocalRoot, as_root
from levibot_pipelines.adapters.store import replace_table, replace_view, sql_literal
from levibot_pipelines.core.trading.killswitch import STATES

# The models a decision policy may trade on (core.evaluation.decision_walk.DECISION_MODELS and
# FLAT); an adapter may not import the evaluation layer, so the names are listed here.
DECISION_MODELS = ("lgbm", "deep", "ensemble", "reversal", "flat")

log = logging.getLogger(__name__)

# 2: the decision engine's columns (decision_model, horizon, expected_net_bps, decision_reason,
# closed_side: the side an EXIT or a reversal closes)
SCHEMA_VERSION = 2
LATEST_JSON = "latest_predictions.json"
LATEST_PARQUET = "latest_predictions.parquet"
# MC dropout seed of the published draws and of the API's recomputes: the published T reproduces.
MC_SEED = 0

F64, I64, STR = pl.Float64(), pl.Int64(), pl.String()
PUBLISHED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": STR,
    "bar_time": I64,
    "bar_close_time": I64,
    "published_at": I64,
    "source": STR,
    "close": F64,
    "deep_p_up": F64,
    "deep_mu": F64,
    "deep_sigma": F64,
    "deep_aleatoric": F64,
    "deep_epistemic": F64,
    "deep_epistemic_p": F64,
    "deep_confidence": F64,
    "mc_samples": I64,
    "deep_version": STR,
    "lgbm_p_up": F64,
    "lgbm_confidence": F64,
    "lgbm_version": STR,
    "ensemble_p_up": F64,
    "ensemble_confidence": F64,
    "w_lgbm": F64,
    "regime": STR,
    "regime_state": I64,
    "entry_threshold": F64,
    "signal": STR,
    "position": F64,
    "size": F64,
    "stop_loss": F64,
    "take_profit": F64,
    "kill_switch": STR,
    "kill_switch_reason": STR,
    "ratio_btc_eth": F64,
    "ratio_eth_sol": F64,
    "data_lag_s": F64,
    "paper_equity": F64,
    "paper_drawdown": F64,
    "decision_model": STR,
    "horizon": I64,
    "expected_net_bps": F64,
    "decision_reason": STR,
    "closed_side": STR,
}
NULLABLE: frozenset[str] = frozenset(
    {
        "stop_loss",
        "take_profit",
        "ratio_btc_eth",
        "ratio_eth_sol",
        "horizon",
        "expected_net_bps",
        "closed_side",
    }
)
UNIT_INTERVAL: tuple[str, ...] = (
    "deep_p_up",
    "deep_confidence",
    "lgbm_p_up",
    "lgbm_confidence",
    "ensemble_p_up",
    "ensemble_confidence",
    "w_lgbm",
)
NON_NEGATIVE: tuple[str, ...] = (
    "deep_sigma",
    "deep_aleatoric",
    "deep_epistemic",
    "deep_epistemic_p",
    "size",
    "paper_drawdown",
    "horizon",
)
ALLOWED: dict[str, tuple[Any, ...]] = {
    "source": ("synthetic", "ccxt", "files"),
    "regime": ("trend", "neutral", "meanrev"),
    "regime_state": (1, 0, -1),
    "signal": ("ENTRY_LONG", "ENTRY_SHORT", "EXIT", "HOLD"),
    "decision_model": DECISION_MODELS,
    "closed_side": ("long", "short", None),
    "kill_switch": STATES,
}
# JSON value types per dtype (bool is an int in Python, never a number here).
JSON_TYPES: dict[pl.DataType, tuple[tuple[type, ...], str]] = {
    F64: ((int, float), "a float"),
    I64: ((int,), "an integer"),
    STR: ((str,), "a string"),
}


@dataclass(frozen=True)
class LatestPredictions:
    """Parsed ``latest_predictions.json``: ``rows`` maps symbol -> {column: value}."""

    published_at: int
    rows: dict[str, dict[str, Any]]
    schema_version: int = SCHEMA_VERSION


def validate_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` cast to ``PUBLISHED_SCHEMA`` (column order included) or ``ValueError``.

    Rejects: missing or extra columns; a column that does not cast losslessly; nulls outside
    ``NULLABLE``; NaN or infinite floats; probabilities and confidences outside [0, 1];
    negative variances, sizes or drawdowns; unknown enum values; duplicate or non-alphanumeric
    symbols; more than one ``published_at``; ``bar_close_time`` before ``bar_time``.
    """
    missing = [c for c in PUBLISHED_SCHEMA if c not in rows.columns]
    extra = [c for c in rows.columns if c not in PUBLISHED_SCHEMA]
    if missing or extra:
        raise ValueError(
            f"published rows do not match PUBLISHED_SCHEMA: missing columns {missing}, "
            f"extra columns {extra}"
        )
    if rows.is_empty():
        raise ValueError("published rows are empty: expected one row per symbol")
    cast = {}
    for col, dtype in PUBLISHED_SCHEMA.items():
        try:
            cast[col] = rows.get_column(col).cast(dtype, strict=True)
        except pl.exceptions.InvalidOperationError:
            raise ValueError(
                f"column {col!r} has dtype {rows.schema[col]}, expected {dtype}"
            ) from None
    df = pl.DataFrame(cast)
    nulls = [c for c in PUBLISHED_SCHEMA if c not in NULLABLE and df.get_column(c).null_count()]
    if nulls:
        raise ValueError(f"nulls in non-nullable columns {nulls}")
    floats = [c for c, t in PUBLISHED_SCHEMA.items() if t == F64]
    bad = [c for c in floats if not df.get_column(c).drop_nulls().is_finite().all()]
    if bad:
        raise ValueError(f"NaN or infinite values in columns {bad}")
    _check_bounds(df)
    symbols = df.get_column("symbol").to_list()
    if len(set(symbols)) != len(symbols) or not all(s.isalnum() for s in symbols):
        raise ValueError(f"symbols must be unique and alphanumeric (BTCUSDT), got {symbols}")
    stamps = df.get_column("published_at").unique().to_list()
    if len(stamps) != 1:
        raise ValueError(f"one publish has one published_at, got {sorted(stamps)}")
    early = df.filter(pl.col("bar_close_time") <= pl.col("bar_time"))
    if early.height:
        raise ValueError(f"bar_close_time <= bar_time for {early['symbol'].to_list()}")
    return df


def _check_bounds(df: pl.DataFrame) -> None:
    outside = {
        c: df.filter(~pl.col(c).is_between(0.0, 1.0))["symbol"].to_list() for c in UNIT_INTERVAL
    }
    outside = {c: s for c, s in outside.items() if s}
    if outside:
        raise ValueError(f"probabilities/confidences outside [0, 1]: {outside} (column: symbols)")
    negative = {c: df.filter(pl.col(c) < 0)["symbol"].to_list() for c in NON_NEGATIVE}
    negative = {c: s for c, s in negative.items() if s}
    if negative:
        raise ValueError(f"negative values where >= 0 is required: {negative} (column: symbols)")
    for col, allowed in ALLOWED.items():
        values = set(df.get_column(col).to_list())
        if not values <= set(allowed):
            raise ValueError(
                f"column {col!r} has {sorted(values - set(allowed))}; "
                f"expected one of {list(allowed)}"
            )


def write_published(
    home: Path | str,
    rows: pl.DataFrame,
    transformer_exports: dict[str, dict[str, bytes]],
    root: DataRoot | None = None,
) -> Path | str:
    """Validate and publish ``rows`` (one per symbol, ``PUBLISHED_SCHEMA``) with their models.

    ``transformer_exports``: symbol -> {file name in ``exported_model.TRANSFORMER_EXPORT_FILES``:
    bytes}, written under the local ``home``; the rows go to ``root`` (default: ``home``).
    Writes model files, the history file, the Parquet and the JSON, in that order, each
    atomically;
    model files whose bytes are unchanged are left alone. Returns where
    ``latest_predictions.json`` is (a ``Path``, an ``s3://`` URL). Raises ``ValueError``
    (nothing written) when the rows or the models are invalid.
    """
    df = validate_rows(rows)
    check_exported_models(df, transformer_exports)
    for sym in df.get_column("symbol").to_list():
        write_exported_model(home, sym, transformer_exports[sym])
    return _write_rows(df, as_root(home if root is None else root), PUBLISHED, HISTORY)


def _write_rows(df: pl.DataFrame, root: DataRoot, out: str, history: str) -> Path | str:
    """Write validated rows ``df`` to ``root``: the history file under the prefix ``history``,
    then the Parquet, then the JSON under ``out``, each atomically. Returns the JSON's
    ``ref``."""
    published_at = int(df.get_column("published_at")[0])
    name = f"{HISTORY_FILE_PREFIX}{published_at}-{uuid.uuid4().hex[:8]}.parquet"
    root.write_parquet_atomic(f"{history}/{name}", df)
    root.write_parquet_atomic(f"{out}/{LATEST_PARQUET}", df)
    doc = {"published_at": published_at, "schema_version": SCHEMA_VERSION, "rows": df.to_dicts()}
    key = f"{out}/{LATEST_JSON}"
    root.write_text_atomic(key, json.dumps(doc, allow_nan=False))
    log.info("published %d rows at %d to %s", df.height, published_at, root.location(key))
    return root.ref(key)


def write_shadow(where: Path | str | DataRoot, rows: pl.DataFrame) -> Path | str:
    """Validate and publish the shadow challengers' ``rows`` (``PUBLISHED_SCHEMA``, one per
    symbol with a challenger) under ``published/shadow`` of ``where`` (the home or a data
    root): history file, Parquet, JSON. Every
    row must be untraded (``signal`` HOLD, ``size`` 0, ``position`` 0), else ``ValueError``
    naming the symbols (nothing written). Returns where the JSON is."""
    df = validate_rows(rows)
    traded = df.filter(
        (pl.col("signal") != "HOLD") | (pl.col("size") != 0.0) | (pl.col("position") != 0.0)
    )
    if traded.height:
        raise ValueError(
            f"shadow rows are never traded: {traded['symbol'].to_list()} have a signal other "
            "than HOLD or a non-zero size or position"
        )
    return _write_rows(df, as_root(where), SHADOW, SHADOW_HISTORY)


def remove_shadow(where: Path | str | DataRoot) -> bool:
    """Remove ``shadow/latest_predictions.{json,parquet}`` (the JSON, what the API reads,
    first; each unlink is atomic) from ``where`` (the home or a data root); the shadow history
    stays. True when a file was removed."""
    root = as_root(where)
    removed = False
    for name in (LATEST_JSON, LATEST_PARQUET):
        removed = root.delete(f"{SHADOW}/{name}") or removed
    if removed:
        where_ = root.location(SHADOW)
        log.info("removed the shadow predictions under %s: no challenger left", where_)
    return removed


def parse_latest(text: str, source: str = LATEST_JSON) -> LatestPredictions:
    """Parse the JSON document; ``PublishedFileError`` naming ``source`` when it is unusable."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PublishedFileError(
            f"{source} is not valid JSON ({exc.msg} at char {exc.pos} of {len(text)}): "
            "half-written or corrupt"
        ) from None
    if not isinstance(doc, dict):
        raise PublishedFileError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise PublishedFileError(
            f"{source}: schema_version {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    rows, published_at = doc.get("rows"), doc.get("published_at")
    if not isinstance(rows, list) or not rows or not isinstance(published_at, int):
        raise PublishedFileError(
            f"{source}: expected 'rows' (a non-empty list) and 'published_at' (int ms)"
        )
    by_symbol: dict[str, dict[str, Any]] = {}
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(PUBLISHED_SCHEMA):
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise PublishedFileError(
                f"{source}: a row does not have the PUBLISHED_SCHEMA columns; got {got}"
            )
        try:
            _check_row(row)
        except ValueError as exc:
            raise PublishedFileError(f"{source}: row {row['symbol']}: {exc}") from None
        by_symbol[row["symbol"]] = row
    try:
        validate_rows(_frame(rows))  # across rows: unique symbols, one published_at
    except ValueError as exc:
        raise PublishedFileError(f"{source}: {exc}") from None
    return LatestPredictions(published_at=published_at, rows=by_symbol)


def _frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """``rows`` (JSON types already checked) as a ``PUBLISHED_SCHEMA`` frame."""
    return pl.DataFrame(
        {
            c: pl.Series(c, [r[c] for r in rows], dtype=t, strict=False)
            for c, t in PUBLISHED_SCHEMA.items()
        }
    )


def _check_row(row: dict[str, Any]) -> None:
    """One parsed JSON row: each value of its column's JSON type (``None`` only in
    ``NULLABLE``), then every ``validate_rows`` rule (bounds, enums, finite floats);
    ``ValueError`` naming the column and the bad value."""
    for col, dtype in PUBLISHED_SCHEMA.items():
        value = row[col]
        if value is None and col in NULLABLE:
            continue
        types, expected = JSON_TYPES[dtype]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"{col!r} is {value!r} ({type(value).__name__}), expected {expected}")
    validate_rows(_frame([row]))


def latest_key(*, shadow: bool = False) -> str:
    """The key of ``latest_predictions.json`` in the data root (what the API reads)."""
    return f"{SHADOW if shadow else PUBLISHED}/{LATEST_JSON}"


def read_latest(where: Path | str | DataRoot, *, shadow: bool = False) -> LatestPredictions | None:
    """The latest published predictions in ``where`` (the home or a data root; with
    ``shadow``: the shadow challengers'); ``None`` when nothing has been published yet.

    Raises ``PublishedFileError`` when the JSON is half-written, corrupt or of another schema.
    """
    root, key = as_root(where), latest_key(shadow=shadow)
    try:
        text = root.read_bytes(key).decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    return parse_latest(text, root.location(key))


def _history_keys(root: DataRoot, shadow: bool) -> list[str]:
    prefix = f"{SHADOW_HISTORY if shadow else HISTORY}/{HISTORY_FILE_PREFIX}"
    return [k for k in root.list(prefix) if k.endswith(".parquet") and "/" not in k[len(prefix) :]]


def read_history(where: Path | str | DataRoot, *, shadow: bool = False) -> pl.DataFrame:
    """Every published row in ``where`` (the home or a data root; with ``shadow``: every
    shadow row), oldest publish first (``PUBLISHED_SCHEMA``; empty when none). Files of
    schema 1 (before the decision engine) read with null decision columns."""
    root = as_root(where)
    keys = _history_keys(root, shadow)
    if not keys:
        return pl.DataFrame(schema=PUBLISHED_SCHEMA)
    frames = root.read_parquet_many(keys, schema=PUBLISHED_SCHEMA, missing_columns="insert")
    return pl.concat(frames).sort("published_at", "symbol")


def refresh_prediction_views(conn, where: Path | str | DataRoot) -> list[str]:
    """(Re)create ``latest_predictions`` and ``predictions`` (the append-only history) in the
    DuckDB connection ``conn``: views over the files of a local root, tables copied from an S3
    root (``adapters.store.refresh_views`` says why)."""
    root = as_root(where)
    latest = f"{PUBLISHED}/{LATEST_PARQUET}"
    if isinstance(root, LocalRoot):
        path = sql_literal(root.ref(latest).as_posix())
        replace_view(conn, "latest_predictions", f"SELECT * FROM read_parquet({path})")
        glob = root.ref(f"{HISTORY}/{HISTORY_FILE_PREFIX}*.parquet").as_posix()
        replace_view(
            conn,
            "predictions",
            f"SELECT * FROM read_parquet({sql_literal(glob)}, union_by_name = true)",
        )
    else:
        replace_table(conn, "latest_predictions", root.read_parquet(latest))
        replace_table(conn, "predictions", read_history(root))
    return ["latest_predictions", "predictions"]
