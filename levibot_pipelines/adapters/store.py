"""Parquet store (the source of truth) and the DuckDB views over it.

The stored bars (``ohlcv/{SYMBOL}.parquet``) and the feature table live in a data root
(``adapters.object_store``): the local home by default, an S3 bucket prefix with
``LEVIBOT_DATA_URL``. Every write replaces a whole file at once (a temporary file renamed over
the old one, or one PUT of the whole object), so a crash never leaves a half-written Parquet
file. OHLCV upserts keep the stored bar when a timestamp arrives again: a bad or repeated page
can never overwrite or drop stored bars. An upsert reads, merges and replaces under a
per-symbol file lock under the local home, so two overlapping ingests of one symbol on one host
(a retry, a manual run beside the schedule) never drop each other's bars. The lock does not
reach other hosts: with the data on S3, single-writer upserts rely on one ingest of a symbol
at a time across the cluster (one ``ohlcv`` partition per symbol, launched by the one ingest
schedule; never two runs of one partition on different hosts at once).
Readers read a file in one request, so a replace in the middle of a read cannot mix two
versions.
"""

from __future__ import annotations

import errno
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from levibot_pipelines.adapters.file_lock import exclusive_lock
from levibot_pipelines.adapters.home import FEATURES_KEY, OHLCV, ohlcv_key, ohlcv_lock_path
from levibot_pipelines.adapters.object_store import DataRoot, LocalRoot
from levibot_pipelines.adapters.object_store import fsync_dir as fsync_dir  # re-exported
from levibot_pipelines.core.data.features import FEATURE_SCHEMA
from levibot_pipelines.core.data.validation import OHLCV_SCHEMA, SchemaError, empty_ohlcv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpsertResult:
    added: int
    total: int
    first_bar: int | None
    last_bar: int | None


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` to the local ``path`` via a temporary sibling file and an atomic rename
    (``object_store.write_file_atomic``)."""
    LocalRoot(path.parent).write_parquet_atomic(path.name, df)


def json_safe(value: Any) -> Any:
    """``value`` ready for ``json.dumps(..., allow_nan=False)``: NaN and infinities become null,
    recursively through dicts, lists and tuples (tuples become lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to the local ``path`` via a temporary sibling file and an atomic
    rename."""
    LocalRoot(path.parent).write_text_atomic(path.name, text)


class StoredFileError(ValueError):
    """A stored Parquet file in the data root cannot be read (corrupt or truncated): a
    permanent error, which retrying does not fix."""


def _stored_file_error(where: str, key: str, exc: Exception) -> StoredFileError:
    detail = (str(exc).strip().splitlines() or [""])[0]
    remedy = (
        "materialize ohlcv for that symbol"
        if key.startswith(f"{OHLCV}/")
        else "materialize cross_asset_features"
    )
    return StoredFileError(
        f"stored file {where} cannot be read ({type(exc).__name__}: {detail}); it is corrupt or "
        f"truncated: move it aside and re-ingest ({remedy})"
    )


class ParquetStore:
    """``ohlcv/{SYMBOL}.parquet`` and ``features/cross_asset_features.parquet`` in ``root``
    (default: the local ``home``; the DuckDB file ``warehouse.duckdb`` in the home holds views
    over them, or copies for an S3 root: ``refresh_views``). The upsert locks are always under
    the local ``home``. ``ohlcv_dir``,
    ``features_path`` and ``ohlcv_path``: ``Path`` objects under a local root, ``s3://`` URLs
    otherwise."""

    def __init__(self, home: Path | str, root: DataRoot | None = None) -> None:
        self.home = Path(home)
        if self.home.exists() and not self.home.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "LEVIBOT_HOME is not a directory", str(self.home)
            )
        self.root = root if root is not None else LocalRoot(self.home)
        self.ohlcv_dir = self.root.ref(OHLCV)
        self.features_path = self.root.ref(FEATURES_KEY)

    def ohlcv_path(self, symbol: str) -> Path | str:
        return self.root.ref(ohlcv_key(symbol))

    def _read(self, key: str, **kwargs: Any) -> pl.DataFrame:
        """``key`` read in one request; ``StoredFileError`` naming it when it is not a readable
        Parquet file, ``FileNotFoundError`` when it does not exist."""
        try:
            return self.root.read_parquet(key, **kwargs)
        except pl.exceptions.PolarsError as exc:
            raise _stored_file_error(self.root.location(key), key, exc) from None

    def read_ohlcv(self, symbol: str) -> pl.DataFrame:
        try:
            return self._read(ohlcv_key(symbol))
        except FileNotFoundError:
            return empty_ohlcv()

    def read_all_ohlcv(self, symbols: tuple[str, ...] | list[str]) -> pl.DataFrame:
        """Long frame of every stored bar of ``symbols``; raises naming symbols with no data."""
        frames, absent = [], []
        for symbol in symbols:
            try:
                frames.append(self._read(ohlcv_key(symbol)))
            except FileNotFoundError:
                absent.append(symbol)
        if absent:
            raise FileNotFoundError(
                f"no stored OHLCV for {absent} under {self.ohlcv_dir}; materialize ohlcv first"
            )
        return pl.concat(frames)

    def timestamps(self, symbol: str) -> pl.Series:
        """Sorted open times of the stored bars of ``symbol`` (empty when none)."""
        try:
            return self._read(ohlcv_key(symbol), columns=["timestamp"]).get_column("timestamp")
        except FileNotFoundError:
            return pl.Series("timestamp", [], dtype=pl.Int64)

    def last_timestamp(self, symbol: str) -> int | None:
        ts = self.timestamps(symbol)
        return ts.max() if ts.len() else None

    def upsert_ohlcv(self, symbol: str, bars: pl.DataFrame) -> UpsertResult:
        """Merge validated ``bars`` into the symbol's file by timestamp; stored bars win."""
        if dict(bars.schema) != OHLCV_SCHEMA:
            raise SchemaError(f"bars for {symbol} do not match OHLCV_SCHEMA: {dict(bars.schema)}")
        wrong = bars.filter(pl.col("symbol") != symbol)
        if wrong.height:
            raise ValueError(
                f"upsert for {symbol} got bars of {wrong['symbol'].unique().to_list()}"
            )
        with exclusive_lock(ohlcv_lock_path(self.home, symbol)):
            stored = self.read_ohlcv(symbol)
            merged = (
                pl.concat([stored, bars]).unique("timestamp", keep="first", maintain_order=True)
                if stored.height
                else bars.unique("timestamp", keep="first", maintain_order=True)
            ).sort("timestamp")
            added = merged.height - stored.height
            if added:
                self.root.write_parquet_atomic(ohlcv_key(symbol), merged)
        ts = merged.get_column("timestamp")
        return UpsertResult(
            added=added,
            total=merged.height,
            first_bar=ts.min() if merged.height else None,
            last_bar=ts.max() if merged.height else None,
        )

    def write_features(self, features: pl.DataFrame) -> None:
        if dict(features.schema) != FEATURE_SCHEMA:
            raise SchemaError(
                f"feature table does not match FEATURE_SCHEMA: {dict(features.schema)}"
            )
        self.root.write_parquet_atomic(FEATURES_KEY, features)

    def has_features(self) -> bool:
        """Whether the feature table has been built."""
        return self.root.exists(FEATURES_KEY)

    def read_features(self, columns: list[str] | None = None) -> pl.DataFrame:
        """The feature table (only ``columns`` when given); ``FileNotFoundError`` naming where
        it should be when it has not been built."""
        try:
            return self._read(FEATURES_KEY, columns=columns)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no feature table at {self.features_path}; materialize cross_asset_features first"
            ) from None

    def features_last_timestamp(self) -> int | None:
        try:
            ts = self._read(FEATURES_KEY, columns=["timestamp"]).get_column("timestamp")
        except FileNotFoundError:
            return None
        return ts.max() if ts.len() else None


def sql_literal(path: Path | str) -> str:
    """``path`` as a SQL string literal (quotes doubled): DuckDB's ``CREATE VIEW`` takes no
    parameters, and a home such as ``/data/o'brien`` must neither break nor inject into it."""
    return "'" + str(path).replace("'", "''") + "'"


def replace_table(conn, name: str, frame: pl.DataFrame) -> None:
    """(Re)create the DuckDB table ``name`` as a copy of ``frame`` (a view of that name is
    dropped first). ``name`` is one of the fixed view names, never user input."""
    _drop_if(conn, name, "VIEW")
    conn.register("levibot_frame", frame)
    try:
        conn.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM levibot_frame")
    finally:
        conn.unregister("levibot_frame")


def replace_view(conn, name: str, select_sql: str) -> None:
    """(Re)create the DuckDB view ``name`` as ``select_sql`` (a table of that name, left by a
    data root on S3, is dropped first)."""
    _drop_if(conn, name, "BASE TABLE")
    conn.execute(f"CREATE OR REPLACE VIEW {name} AS {select_sql}")


def _drop_if(conn, name: str, kind: str) -> None:
    found = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_type = ?",
        [name, kind],
    ).fetchall()[0][0]
    if found:
        conn.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} {name}")


OHLCV_COLUMNS = "symbol, timestamp, open, high, low, close, volume, source"


def refresh_views(conn, store: ParquetStore) -> list[str]:
    """(Re)create ``ohlcv`` and ``cross_asset_features`` in the DuckDB connection ``conn``.

    A local root: views over the Parquet files (always current). An S3 root: tables copied from
    the files read through the root (current as of this refresh), because DuckDB reads S3 only
    with its ``httpfs`` extension, which it downloads on first use and which needs the
    credentials set up in every connection that reads the views. Created only for data that
    exists; returns their names.
    """
    created = []
    if not isinstance(store.root, LocalRoot):
        keys = [k for k in store.root.list(f"{OHLCV}/") if k.endswith(".parquet")]
        if keys:
            frame = pl.concat([store._read(k) for k in keys])
            replace_table(conn, "ohlcv", frame.select(OHLCV_COLUMNS.split(", ")))
            created.append("ohlcv")
        if store.has_features():
            replace_table(conn, "cross_asset_features", store.read_features())
            created.append("cross_asset_features")
        return created
    if any(Path(store.ohlcv_dir).glob("*.parquet")):
        glob = sql_literal((Path(store.ohlcv_dir) / "*.parquet").as_posix())
        replace_view(conn, "ohlcv", f"SELECT {OHLCV_COLUMNS} FROM read_parquet({glob})")
        created.append("ohlcv")
    if Path(store.features_path).exists():
        path = sql_literal(Path(store.features_path).as_posix())
        replace_view(conn, "cross_asset_features", f"SELECT * FROM read_parquet({path})")
        created.append("cross_asset_features")
    return created
