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


def _bars(timestamps) -> pl.DataFrame:
    n = len(timestamps)
    return pl.DataFrame(
        {
            "timestamp": timestamps,
            "open": [1.0] * n,
            "high": [1.2] * n,
            "low": [0.9] * n,
            "close": [1.1] * n,
            "volume": [5.0] * n,
        }
    )


APR_2023_S = 1_680_307_200  # 2023-04-01 00:00 UTC in seconds


@pytest.mark.parametrize(
    ("timestamps", "unit", "sample"),
    [
        ([APR_2023_S + 900 * i for i in range(3)], "seconds", APR_2023_S),
        ([APR_2023_S * 10**6 + 900 * 10**6 * i for i in range(3)], "microseconds", None),
        ([APR_2023_S * 10**9 + 900 * 10**9 * i for i in range(3)], "nanoseconds", None),
    ],
)
@pytest.mark.parametrize("ext", [".parquet", ".csv"])
def test_timestamps_not_in_ms_are_an_error_naming_the_file(tmp_path, timestamps, unit, sample, ext):
    path = tmp_path / f"BTCUSDT-15m{ext}"
    df = _bars(timestamps)
    df.write_parquet(path) if ext == ".parquet" else df.write_csv(path)
    store = ParquetStore(tmp_path / "home")
    start = APR_2023_S * 1000
    sample = timestamps[0] if sample is None else sample
    expected = f"timestamp must be ms since the epoch, UTC; {path} looks like {unit} ({sample})"
    with pytest.raises(ValueError) as exc:
        ingest_symbol(
            FilesSource(tmp_path, "15m"),
            store,
            "BTCUSDT",
            start_ms=start,
            now_ms=start + 10 * TF_MS,
            tf_ms=TF_MS,
        )
    assert str(exc.value) == expected
    assert store.read_ohlcv("BTCUSDT").height == 0


BAD_FILES = {
    "missing": ("BTCUSDT.csv", "timestamp,open,high,low,close\n0,1,1.2,0.9,1.1\n"),
    "renamed": ("BTCUSDT.csv", "time,open,high,low,close,volume\n0,1,1.2,0.9,1.1,5\n"),
    "semicolon": ("BTCUSDT.csv", "timestamp;open;high;low;close;volume\n0;1;1.2;0.9;1.1;5\n"),
    "string_ts": (
        "BTCUSDT.csv",
        "timestamp,open,high,low,close,volume\n2023-04-01 00:00,1,1.2,0.9,1.1,5\n",
    ),
    "empty": ("BTCUSDT.csv", ""),
    "header_only": ("BTCUSDT.csv", "timestamp,open,high,low,close,volume\n"),
    "corrupt_parquet": ("BTCUSDT.parquet", "this is not a parquet file"),
}
BAD_FILE_MESSAGES = {
    "missing": r"lacks columns \['volume'\].*found \['timestamp', 'open', 'high', 'low', 'close'\]",
    "renamed": r"lacks columns \['timestamp'\].*found \['time', 'open'",
    "semicolon": r"lacks columns .*is it ';'-separated\? expected a comma-separated file",
    "string_ts": r"timestamp column is str, expected integer ms",
    "empty": r"has no rows",
    "header_only": r"has no rows",
    "corrupt_parquet": r"cannot be read as a candle file",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_candle_files_raise_a_value_error_naming_the_file(tmp_path, case):
    name, text = BAD_FILES[case]
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=BAD_FILE_MESSAGES[case]) as exc:
        list(FilesSource(tmp_path, "15m").pages("BTCUSDT", 0, 10 * TF_MS))
    assert str(tmp_path / name) in str(exc.value)


def test_small_ms_timestamps_on_the_grid_are_not_taken_for_seconds(tmp_path):
    _bars([0, TF_MS]).write_parquet(tmp_path / "BTCUSDT.parquet")
    (page,) = FilesSource(tmp_path, "15m").pages("BTCUSDT", 0, TF_MS)
    assert page["timestamp"].to_list() == [0, TF_MS]
