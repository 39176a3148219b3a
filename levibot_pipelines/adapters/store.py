"""Parquet store (the source of truth) and the DuckDB views over it.

Every write goes to a temporary file in the target directory and is renamed over the old file,
so a crash never leaves a half-written Parquet file. OHLCV upserts keep the stored bar when a
timestamp arrives again: a bad or repeated page can never overwrite or drop stored bars. An
upsert reads, merges and replaces under a per-symbol file lock, so two overlapping ingests of one
symbol (a retry, a manual run beside the schedule) never drop each other's bars; readers open a
file once, so a replace in the middle of a read cannot mix two versions.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from levibot_pipelines.adapters.file_lock import exclusive_lock
from levibot_pipelines.adapters.home import features_path, ohlcv_dir, ohlcv_lock_path
from levibot_pipelines.core.data.features import FEATURE_SCHEMA
from levibot_pipelines.core.data.validation import OHLCV_SCHEMA, SchemaError, empty_ohlcv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpsertResult:
    added: int
    total: int
    first_bar: int | None
    last_bar: int | None


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, flush it to disk, rename it over
    ``path`` and flush the directory entry: after a crash or a power loss ``path`` holds the old
    or the new content, never a torn or empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


ORPHAN_AGE_S = 3600  # a temporary file this old was left by a writer that died mid-write


def _remove_orphans(path: Path) -> None:
    """Delete temporary siblings of ``path`` that a crashed writer left behind (older than
    ``ORPHAN_AGE_S``; a live writer's temporary file is seconds old and is left alone)."""
    cutoff = time.time() - ORPHAN_AGE_S
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                log.warning("removed %s, left by a writer that did not finish", tmp)
        except FileNotFoundError:
            pass


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename or a new file in it) to disk."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    """Write ``df`` to ``path`` via a temporary sibling file and an atomic rename."""
    _write_atomic(path, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


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
    """Write ``text`` to ``path`` via a temporary sibling file and an atomic rename."""
    _write_atomic(path, lambda tmp: tmp.write_text(text))


class StoredFileError(ValueError):
    """A stored Parquet file under LEVIBOT_HOME cannot be read (corrupt or truncated): a
    permanent error, which retrying does not fix."""


def _stored_file_error(path: Path, exc: Exception) -> StoredFileError:
    detail = (str(exc).strip().splitlines() or [""])[0]
    remedy = (
        "materialize ohlcv for that symbol"
        if path.parent.name == "ohlcv"
        else "materialize cross_asset_features"
    )
    return StoredFileError(
        f"stored file {path} cannot be read ({type(exc).__name__}: {detail}); it is corrupt or "
        f"truncated: move it aside and re-ingest ({remedy})"
    )


def _read_stored(path: Path, read):
    """``read(path)``, with a polars read error turned into ``StoredFileError`` naming
    ``path``."""
    try:
        return read(path)
    except pl.exceptions.PolarsError as exc:
        raise _stored_file_error(path, exc) from None


def _read_parquet_once(path: Path) -> pl.DataFrame:
    """``path`` read through one open file: a writer's atomic replace during the read cannot
    hand the reader parts of two files. ``StoredFileError`` naming ``path`` when it is not a
    readable Parquet file."""

    def read(p: Path) -> pl.DataFrame:
        with open(p, "rb") as f:
            return pl.read_parquet(f)

    return _read_stored(path, read)


class ParquetStore:
    """Files under ``home``: ``ohlcv/{SYMBOL}.parquet``, ``features/...parquet``
    (the DuckDB file ``warehouse.duckdb`` beside them holds views only)."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        if self.home.exists() and not self.home.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "LEVIBOT_HOME is not a directory", str(self.home)
            )
        self.ohlcv_dir = ohlcv_dir(self.home)
        self.features_path = features_path(self.home)

    def ohlcv_path(self, symbol: str) -> Path:
        return self.ohlcv_dir / f"{symbol}.parquet"

    def read_ohlcv(self, symbol: str) -> pl.DataFrame:
        path = self.ohlcv_path(symbol)
        if not path.exists():
            return empty_ohlcv()
        return _read_parquet_once(path)

    def read_all_ohlcv(self, symbols: tuple[str, ...] | list[str]) -> pl.DataFrame:
        """Long frame of every stored bar of ``symbols``; raises naming symbols with no data."""
        absent = [s for s in symbols if not self.ohlcv_path(s).exists()]
        if absent:
            raise FileNotFoundError(
                f"no stored OHLCV for {absent} under {self.ohlcv_dir}; materialize ohlcv first"
            )
        return pl.concat([_read_parquet_once(self.ohlcv_path(s)) for s in symbols])

    def timestamps(self, symbol: str) -> pl.Series:
        """Sorted open times of the stored bars of ``symbol`` (empty when none)."""
        path = self.ohlcv_path(symbol)
        if not path.exists():
            return pl.Series("timestamp", [], dtype=pl.Int64)
        return _read_stored(
            path, lambda p: pl.read_parquet(p, columns=["timestamp"]).get_column("timestamp")
        )

    def last_timestamp(self, symbol: str) -> int | None:
        path = self.ohlcv_path(symbol)
        if not path.exists():
            return None
        return _read_stored(path, _max_timestamp)

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
                write_parquet_atomic(merged, self.ohlcv_path(symbol))
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
        write_parquet_atomic(features, self.features_path)

    def read_features(self) -> pl.DataFrame:
        if not self.features_path.exists():
            raise FileNotFoundError(
                f"no feature table at {self.features_path}; materialize cross_asset_features first"
            )
        return _read_parquet_once(self.features_path)

    def features_last_timestamp(self) -> int | None:
        if not self.features_path.exists():
            return None
        return _read_stored(self.features_path, _max_timestamp)


def _max_timestamp(path: Path) -> int | None:
    return pl.scan_parquet(path).select(pl.col("timestamp").max()).collect().item()


def sql_literal(path: Path | str) -> str:
    """``path`` as a SQL string literal (quotes doubled): DuckDB's ``CREATE VIEW`` takes no
    parameters, and a home such as ``/data/o'brien`` must neither break nor inject into it."""
    return "'" + str(path).replace("'", "''") + "'"


def refresh_views(conn, store: ParquetStore) -> list[str]:
    """(Re)create the DuckDB views ``ohlcv`` and ``cross_asset_features`` over the Parquet files.

    ``conn`` is a DuckDB connection. Views are created only for data that exists; returns their
    names.
    """
    created = []
    if any(store.ohlcv_dir.glob("*.parquet")):
        glob = sql_literal((store.ohlcv_dir / "*.parquet").as_posix())
        conn.execute(
            "CREATE OR REPLACE VIEW ohlcv AS SELECT symbol, timestamp, open, high, low, close, "
            f"volume, source FROM read_parquet({glob})"
        )
        created.append("ohlcv")
    if store.features_path.exists():
        conn.execute(
            "CREATE OR REPLACE VIEW cross_asset_features AS SELECT * FROM "
            f"read_parquet({sql_literal(store.features_path.as_posix())})"
        )
        created.append("cross_asset_features")
    return created
