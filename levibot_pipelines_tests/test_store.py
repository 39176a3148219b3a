import duckdb
import polars as pl
import pytest

from levibot_pipelines.adapters.sources import SyntheticSource
from levibot_pipelines.adapters.store import ParquetStore, refresh_views
from levibot_pipelines.core.data.features import build_features
from levibot_pipelines.core.data.validation import SchemaError, validate_ohlcv
from levibot_pipelines.usecases.ingest import ingest_symbol
from levibot_pipelines_tests.conftest import SYMBOLS, TF_MS


def clean(rows, symbol="BTCUSDT"):
    raw = pl.DataFrame(
        rows, schema=["timestamp", "open", "high", "low", "close", "volume"], orient="row"
    )
    return validate_ohlcv(raw, symbol=symbol, source="test", tf_ms=TF_MS).bars


def test_upsert_is_idempotent_and_stored_bars_win(tmp_path):
    store = ParquetStore(tmp_path)
    first = clean([(0, 1.0, 2.0, 0.5, 1.5, 1.0), (TF_MS, 1.5, 2.0, 1.0, 1.8, 1.0)])
    assert store.upsert_ohlcv("BTCUSDT", first).added == 2
    mtime = store.ohlcv_path("BTCUSDT").stat().st_mtime_ns
    again = store.upsert_ohlcv("BTCUSDT", first)
    assert (again.added, again.total) == (0, 2)
    assert store.ohlcv_path("BTCUSDT").stat().st_mtime_ns == mtime  # nothing rewritten
    revised = clean([(TF_MS, 9.0, 9.0, 9.0, 9.0, 9.0), (2 * TF_MS, 1.8, 2.0, 1.7, 1.9, 1.0)])
    result = store.upsert_ohlcv("BTCUSDT", revised)
    assert (result.added, result.total, result.first_bar, result.last_bar) == (1, 3, 0, 2 * TF_MS)
    stored = store.read_ohlcv("BTCUSDT")
    assert stored["close"].to_list() == [1.5, 1.8, 1.9]  # the stored bar at TF_MS was kept
    assert list(tmp_path.joinpath("ohlcv").iterdir()) == [store.ohlcv_path("BTCUSDT")]


def test_upsert_refuses_wrong_schema_or_symbol(tmp_path):
    store = ParquetStore(tmp_path)
    bars = clean([(0, 1.0, 2.0, 0.5, 1.5, 1.0)])
    with pytest.raises(SchemaError, match="do not match OHLCV_SCHEMA"):
        store.upsert_ohlcv("BTCUSDT", bars.drop("source"))
    with pytest.raises(ValueError, match=r"upsert for ETHUSDT got bars of \['BTCUSDT'\]"):
        store.upsert_ohlcv("ETHUSDT", bars)
    assert not store.ohlcv_path("ETHUSDT").exists()


def test_incremental_synthetic_ingest_fetches_only_new_bars(tmp_path):
    store = ParquetStore(tmp_path)
    source = SyntheticSource(start_ms=0, tf_ms=TF_MS, seed=1)
    now = 1000 * TF_MS + 60_000  # bar 999 closed one minute ago
    first = ingest_symbol(source, store, "ETHUSDT", start_ms=0, now_ms=now, tf_ms=TF_MS)
    assert (first.fetched, first.rows_added, first.total_rows) == (1000, 1000, 1000)
    assert first.last_bar == 999 * TF_MS and first.data_lag_s == 60.0
    same = ingest_symbol(source, store, "ETHUSDT", start_ms=0, now_ms=now, tf_ms=TF_MS)
    assert (same.fetched, same.rows_added, same.total_rows) == (0, 0, 1000)
    later = ingest_symbol(source, store, "ETHUSDT", start_ms=0, now_ms=now + 2 * TF_MS, tf_ms=TF_MS)
    assert (later.fetched, later.rows_added, later.total_rows) == (2, 2, 1002)
    # Incremental bars are exactly what a single full run would have stored.
    full = ParquetStore(tmp_path / "full")
    ingest_symbol(source, full, "ETHUSDT", start_ms=0, now_ms=now + 2 * TF_MS, tf_ms=TF_MS)
    assert store.read_ohlcv("ETHUSDT").equals(full.read_ohlcv("ETHUSDT"))


def test_duckdb_views_over_parquet(tmp_path):
    store = ParquetStore(tmp_path)
    source = SyntheticSource(start_ms=0, tf_ms=TF_MS, seed=1)
    for s in SYMBOLS:
        ingest_symbol(source, store, s, start_ms=0, now_ms=400 * TF_MS, tf_ms=TF_MS)
    store.write_features(build_features(store.read_all_ohlcv(SYMBOLS), tf_ms=TF_MS, horizon=1))
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as conn:
        assert refresh_views(conn, store) == ["ohlcv", "cross_asset_features"]
    with duckdb.connect(str(db), read_only=True) as conn:
        counts = conn.sql("SELECT symbol, count(*) AS n FROM ohlcv GROUP BY 1 ORDER BY 1").pl()
        assert counts.rows() == [(s, 400) for s in SYMBOLS]  # bars 0..399: 399 closed at now
        cols = conn.sql("DESCRIBE ohlcv").pl()["column_name"].to_list()
        assert cols == ["symbol", "timestamp", "open", "high", "low", "close", "volume", "source"]
        n = conn.sql("SELECT count(*) FROM cross_asset_features").fetchall()[0][0]
        assert n == 3 * (400 - 199)


def test_views_skip_missing_data(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        assert refresh_views(conn, ParquetStore(tmp_path)) == []
    with pytest.raises(FileNotFoundError, match=r"no stored OHLCV for \['BTCUSDT'\]"):
        ParquetStore(tmp_path).read_all_ohlcv(["BTCUSDT"])


WRITER = """
import sys
import polars as pl
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.validation import validate_ohlcv

home, parity, n, tf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = ParquetStore(home)
for i in range(n):
    t = (2 * i + parity) * tf
    raw = pl.DataFrame(
        [(t, 1.0, 2.0, 0.5, 1.5, 1.0)],
        schema=["timestamp", "open", "high", "low", "close", "volume"],
        orient="row",
    )
    bars = validate_ohlcv(raw, symbol="BTCUSDT", source="test", tf_ms=tf).bars
    assert store.upsert_ohlcv("BTCUSDT", bars).added == 1
"""


def test_concurrent_upserts_of_one_symbol_lose_no_bar(tmp_path):
    # Two real processes (two overlapping ingest runs of one partition) each store 60 bars of
    # their own, one bar per upsert: every bar reported stored must still be there after both.
    import subprocess
    import sys

    n = 60
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(parity), str(n), str(TF_MS)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for parity in (0, 1)
    ]
    for w in writers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    stored = ParquetStore(tmp_path).read_ohlcv("BTCUSDT")["timestamp"].to_list()
    assert stored == [k * TF_MS for k in range(2 * n)]


def test_views_work_under_a_home_with_a_quote_in_its_path(tmp_path):
    # A home like /data/o'brien/levibot must not break (or inject into) the view SQL.
    home = tmp_path / "o'brien"
    store = ParquetStore(home)
    store.upsert_ohlcv("BTCUSDT", clean([(0, 1.0, 2.0, 0.5, 1.5, 1.0)]))
    with duckdb.connect(str(home / "warehouse.duckdb")) as conn:
        assert refresh_views(conn, store) == ["ohlcv"]
        assert conn.sql("SELECT count(*) FROM ohlcv").fetchall() == [(1,)]


def test_atomic_writes_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    # The file's bytes are flushed before it replaces the old one, and the directory entry
    # after: otherwise a power loss can leave an empty file under the final name.
    import os

    from levibot_pipelines.adapters.store import write_text_atomic

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")))
    write_text_atomic("hello\n", tmp_path / "a.txt")
    monkeypatch.setattr(os, "fsync", real)
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    assert len(synced) == 2 and synced[0].endswith(".tmp") and synced[1] == str(tmp_path)


def test_a_crashed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    import os
    import time

    from levibot_pipelines.adapters.store import write_text_atomic

    orphan = tmp_path / ".a.txt.dead0000.tmp"  # left by a writer killed before its rename
    fresh = tmp_path / ".a.txt.live0000.tmp"  # a writer that is still writing
    for f in (orphan, fresh):
        f.write_text("partial")
    hour_ago = time.time() - 3700
    os.utime(orphan, (hour_ago, hour_ago))
    write_text_atomic("hello\n", tmp_path / "a.txt")
    assert not orphan.exists() and fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "a.txt"]


def test_a_corrupt_stored_file_is_a_value_error_naming_it_and_the_remedy(tmp_path):
    store = ParquetStore(tmp_path)
    path = store.ohlcv_path("BTCUSDT")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage, not parquet")
    readers = {
        "read_ohlcv": lambda: store.read_ohlcv("BTCUSDT"),
        "read_all_ohlcv": lambda: store.read_all_ohlcv(["BTCUSDT"]),
        "timestamps": lambda: store.timestamps("BTCUSDT"),
        "last_timestamp": lambda: store.last_timestamp("BTCUSDT"),
    }
    for name, read in readers.items():
        with pytest.raises(ValueError, match="move it aside and re-ingest") as exc:
            read()
        assert str(path) in str(exc.value), name
    store.features_path.parent.mkdir(parents=True, exist_ok=True)
    store.features_path.write_bytes(b"garbage")
    for read in (store.read_features, store.features_last_timestamp):
        with pytest.raises(ValueError, match="cross_asset_features") as exc:
            read()
        assert str(store.features_path) in str(exc.value)


def test_a_home_that_is_a_file_is_refused(tmp_path):
    home = tmp_path / "home"
    home.write_text("x")
    with pytest.raises(NotADirectoryError, match="LEVIBOT_HOME is not a directory") as exc:
        ParquetStore(home)
    assert exc.value.filename == str(home)
