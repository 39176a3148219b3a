import polars as pl
import pytest

from levibot_pipelines.adapters.sources import FilesSource
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol, make_source
from levibot_pipelines_tests.conftest import OHLCV_DIR, TF_MS


@pytest.mark.shared_data
def test_replays_the_shared_candles(tmp_path, real_candles):
    settings = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_SOURCE": "files",
            "LEVIBOT_FILES_DIR": str(OHLCV_DIR),
            "LEVIBOT_START": "2023-04-01",
        }
    )
    source = make_source(settings.market)
    assert isinstance(source, FilesSource)
    store = ParquetStore(tmp_path)
    now = real_candles["SOLUSDT"]["timestamp"][-1] + TF_MS  # as if the last bar just closed
    report = ingest_symbol(
        source, store, "SOLUSDT", start_ms=settings.market.start_ms, now_ms=now, tf_ms=TF_MS
    )
    assert (report.total_rows, report.gaps, report.rejected) == (70_176, 0, {})
    stored = store.read_ohlcv("SOLUSDT")
    assert stored.select(real_candles["SOLUSDT"].columns).equals(real_candles["SOLUSDT"])
    assert stored["source"].unique().to_list() == ["files"]


def test_csv_files_and_clear_errors(tmp_path):
    pl.DataFrame(
        {
            "timestamp": [0, TF_MS, 2 * TF_MS],
            "open": [1.0, 1.1, 1.2],
            "high": [1.2, 1.3, 1.4],
            "low": [0.9, 1.0, 1.1],
            "close": [1.1, 1.2, 1.3],
            "volume": [5.0, 6.0, 7.0],
        }
    ).write_csv(tmp_path / "BTCUSDT-15m.csv")
    source = FilesSource(tmp_path, "15m")
    store = ParquetStore(tmp_path / "home")
    report = ingest_symbol(source, store, "BTCUSDT", start_ms=0, now_ms=3 * TF_MS, tf_ms=TF_MS)
    assert report.total_rows == 3
    with pytest.raises(
        ValueError, match=r"no candle file for symbol 'ETHUSDT'.*ETHUSDT-15m.parquet"
    ):
        ingest_symbol(source, store, "ETHUSDT", start_ms=0, now_ms=3 * TF_MS, tf_ms=TF_MS)
    with pytest.raises(ValueError, match="is not a directory"):
        FilesSource(tmp_path / "nope", "15m")
