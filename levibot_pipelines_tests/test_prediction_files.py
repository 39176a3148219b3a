"""The published-predictions files: schema, atomic replacement, append-only history and the
exported deep model. ``make_rows`` and ``tiny_deep_files`` are shared with test_api."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from levibot_pipelines.adapters.exported_model import (
    TRANSFORMER_EXPORT_FILES,
    PublishedFileError,
    current_export_dir,
    load_exported_transformer,
    read_export_dir,
    read_exported_transformer,
)
from levibot_pipelines.adapters.home import (
    exported_transformer_dir,
    history_dir,
    history_glob,
    published_dir,
)
from levibot_pipelines.adapters.prediction_files import (
    PUBLISHED_SCHEMA,
    read_history,
    read_latest,
    write_published,
)
from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.transformer import (
    LevibotTransformer,
    TransformerConfig,
    save_model,
    state_dict_to_bytes,
)

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
TF_MS = 900_000
BAR = 1_767_225_600_000  # 2026-01-01 00:00 UTC, on the 15m grid
TINY = TransformerConfig(n_features=10, window=8, d_model=8, n_heads=2, n_layers=1, d_ff=16)


def make_row(symbol: str, bar_time: int = BAR, published_at: int | None = None, **kw) -> dict:
    """One valid published row; distinct, recognisable values per symbol."""
    i = SYMBOLS.index(symbol) if symbol in SYMBOLS else 0
    row = {
        "symbol": symbol,
        "bar_time": bar_time,
        "bar_close_time": bar_time + TF_MS,
        "published_at": bar_time + TF_MS + 30_000 if published_at is None else published_at,
        "source": "synthetic",
        "close": 100.0 * (i + 1),
        "deep_p_up": 0.61 - 0.1 * i,
        "deep_mu": 0.0004 - 0.0003 * i,
        "deep_sigma": 0.005 + 0.001 * i,
        "deep_aleatoric": 2.4e-5,
        "deep_epistemic": 1.0e-6,
        "deep_epistemic_p": 4.0e-4,
        "deep_confidence": 0.2 - 0.05 * i,
        "mc_samples": 5,
        "deep_version": "3",
        "lgbm_p_up": 0.55,
        "lgbm_confidence": 0.1,
        "lgbm_version": "2",
        "ensemble_p_up": 0.58 - 0.07 * i,
        "ensemble_confidence": 0.16,
        "w_lgbm": 0.4,
        "regime": ("trend", "neutral", "meanrev")[i],
        "regime_state": (1, 0, -1)[i],
        "entry_threshold": 0.56,
        "signal": ("ENTRY_LONG", "HOLD", "EXIT")[i],
        "position": (0.5, 0.0, 0.0)[i],
        "size": (0.5, 0.0, 0.0)[i],
        "stop_loss": (98.0, None, None)[i],
        "take_profit": (104.0, None, None)[i],
        "kill_switch": "ACTIVE",
        "kill_switch_reason": "",
        "ratio_btc_eth": 30.5,
        "ratio_eth_sol": 15.25,
        "data_lag_s": 30.0,
        "paper_equity": 1.02 - 0.01 * i,
        "paper_drawdown": 0.01 * i,
        "decision_model": ("ensemble", "flat", "lgbm")[i],
        "horizon": (16, None, 4)[i],
        "expected_net_bps": (12.3, None, -20.0)[i],
        "decision_reason": (
            "entry: expected net +12.3 bps over 16 bars",
            "no validated edge after costs",
            "exit long: expected gross +2.0 bps below the exit level 12 bps",
        )[i],
        "closed_side": None,  # SOL's EXIT: no earlier bar held a position
    }
    row.update(kw)
    return row


def make_rows(symbols=SYMBOLS, **kw) -> pl.DataFrame:
    return pl.DataFrame([make_row(s, **kw) for s in symbols])


def tiny_model(config: TransformerConfig = TINY, seed: int = 0) -> LevibotTransformer:
    torch.manual_seed(seed)
    return LevibotTransformer(config)


def tiny_deep_files(
    symbol: str, version: str = "3", model: LevibotTransformer | None = None
) -> dict[str, bytes]:
    """The four exported files of a real (untrained) tiny Transformer with an identity
    calibrator."""
    state, config = save_model(model if model is not None else tiny_model())
    return {
        "state_dict.pt": state_dict_to_bytes(state),
        "config.json": json.dumps(config).encode(),
        "calibrator.json": json.dumps(Calibrator().to_dict()).encode(),
        "meta.json": json.dumps({"version": version, "name": f"levibot-deep-{symbol}"}).encode(),
    }


@pytest.fixture(scope="module")
def models() -> dict[str, dict[str, bytes]]:
    files = tiny_deep_files("BTCUSDT")
    return {s: {**files, "meta.json": tiny_deep_files(s)["meta.json"]} for s in SYMBOLS}


def test_round_trip_json_parquet_and_history(tmp_path, models):
    rows = make_rows()
    path = write_published(tmp_path, rows, models)
    assert path == published_dir(tmp_path) / "latest_predictions.json"
    latest = read_latest(tmp_path)
    assert latest.published_at == BAR + TF_MS + 30_000 and latest.schema_version == 2
    assert latest.rows == {r["symbol"]: r for r in rows.to_dicts()}
    assert (
        latest.rows["BTCUSDT"]["stop_loss"] == 98.0 and latest.rows["ETHUSDT"]["stop_loss"] is None
    )
    parquet = pl.read_parquet(published_dir(tmp_path) / "latest_predictions.parquet")
    assert dict(parquet.schema) == PUBLISHED_SCHEMA
    assert parquet.to_dicts() == rows.to_dicts()
    doc = json.loads(path.read_text())
    assert set(doc) == {"published_at", "schema_version", "rows"}
    assert read_history(tmp_path).to_dicts() == rows.sort("symbol").to_dicts()
    assert history_glob(tmp_path).endswith("published/history/predictions-*.parquet")


def test_nothing_published_yet(tmp_path):
    assert read_latest(tmp_path) is None
    empty = read_history(tmp_path)
    assert empty.height == 0 and dict(empty.schema) == PUBLISHED_SCHEMA


def test_loose_dtypes_are_cast_to_the_schema(tmp_path, models):
    # All-None stop-loss columns arrive as dtype Null, an integral close as Int64.
    rows = make_rows(stop_loss=None, take_profit=None, close=100)
    write_published(tmp_path, rows, models)
    parquet = pl.read_parquet(published_dir(tmp_path) / "latest_predictions.parquet")
    assert dict(parquet.schema) == PUBLISHED_SCHEMA
    assert parquet["close"].to_list() == [100.0] * 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda df: df.drop("deep_p_up"), r"missing columns \['deep_p_up'\]"),
        (lambda df: df.with_columns(extra=pl.lit(1)), r"extra columns \['extra'\]"),
        (lambda df: df.with_columns(signal=pl.lit(None, pl.String)), r"non-nullable.*'signal'"),
        (lambda df: df.with_columns(deep_p_up=pl.lit(1.2)), r"outside \[0, 1\].*deep_p_up"),
        (lambda df: df.with_columns(w_lgbm=pl.lit(-0.1)), r"outside \[0, 1\].*w_lgbm"),
        (lambda df: df.with_columns(deep_sigma=pl.lit(-1.0)), r"deep_sigma"),
        (lambda df: df.with_columns(deep_mu=pl.lit(float("nan"))), r"NaN.*deep_mu"),
        (lambda df: df.with_columns(signal=pl.lit("BUY")), r"'signal' has \['BUY'\]"),
        (lambda df: df.with_columns(close=pl.lit("x")), r"'close' has dtype String"),
        (lambda df: df.with_columns(symbol=pl.lit("BTCUSDT")), r"unique"),
        (lambda df: df.with_columns(symbol=pl.lit("../x")).head(1), r"alphanumeric"),
        (lambda df: df.with_columns(published_at=pl.Series([1, 2, 3])), r"one published_at"),
        (lambda df: df.with_columns(bar_close_time=pl.col("bar_time")), r"bar_close_time <="),
        (lambda df: df.head(0), r"empty"),
    ],
)
def test_invalid_rows_are_rejected_and_nothing_is_written(tmp_path, models, change, match):
    with pytest.raises(ValueError, match=match):
        write_published(tmp_path, change(make_rows()), models)
    assert not published_dir(tmp_path).exists()


def test_every_row_needs_its_exported_model(tmp_path, models):
    with pytest.raises(ValueError, match=r"no exported deep model for SOLUSDT"):
        write_published(tmp_path, make_rows(), {s: models[s] for s in SYMBOLS[:2]})
    partial = {
        **models,
        "ETHUSDT": {k: v for k, v in models["ETHUSDT"].items() if k != "config.json"},
    }
    with pytest.raises(ValueError, match=r"ETHUSDT: missing \['config.json'\]"):
        write_published(tmp_path, make_rows(), partial)
    with pytest.raises(ValueError, match=r"meta.json names version '3'.*deep_version is '4'"):
        write_published(tmp_path, make_rows(deep_version="4"), models)
    assert not published_dir(tmp_path).exists()


def test_truncated_or_foreign_json_is_a_published_file_error(tmp_path, models):
    path = write_published(tmp_path, make_rows(), models)
    good = path.read_text()
    path.write_text(good[: len(good) // 2])  # what a non-atomic writer would leave on a crash
    with pytest.raises(PublishedFileError, match=r"not valid JSON.*half-written"):
        read_latest(tmp_path)
    path.write_text(json.dumps({**json.loads(good), "schema_version": 1}))
    with pytest.raises(PublishedFileError, match=r"schema_version 1, expected 2"):
        read_latest(tmp_path)
    path.write_text(json.dumps({**json.loads(good), "rows": []}))
    with pytest.raises(PublishedFileError, match=r"non-empty list"):
        read_latest(tmp_path)
    doc = json.loads(good)
    del doc["rows"][0]["deep_p_up"]
    path.write_text(json.dumps(doc))
    with pytest.raises(PublishedFileError, match=r"PUBLISHED_SCHEMA columns"):
        read_latest(tmp_path)


def test_stray_temp_files_of_a_crashed_writer_are_ignored(tmp_path, models):
    write_published(tmp_path, make_rows(), models)
    out = published_dir(tmp_path)
    (out / ".latest_predictions.json.0123abcd.tmp").write_text('{"published_at": 1, "ro')
    (out / "history" / ".predictions-1-0123abcd.parquet.99.tmp").write_bytes(b"PAR1 garbage")
    assert read_latest(tmp_path).published_at == BAR + TF_MS + 30_000
    assert read_history(tmp_path).height == 3


def test_a_failed_write_leaves_the_previous_publish_readable(tmp_path, models, monkeypatch):
    write_published(tmp_path, make_rows(), models)
    real_write_text = Path.write_text

    def crash_halfway(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash_halfway)
    later = BAR + 2 * TF_MS
    with pytest.raises(OSError, match="disk full"):
        write_published(tmp_path, make_rows(bar_time=later), models)
    monkeypatch.undo()
    assert read_latest(tmp_path).rows["BTCUSDT"]["bar_time"] == BAR
    assert not list(published_dir(tmp_path).rglob("*.tmp"))


def test_history_is_append_only(tmp_path, models):
    write_published(tmp_path, make_rows(), models)
    first = sorted((published_dir(tmp_path) / "history").iterdir())
    first_bytes = first[0].read_bytes()
    write_published(tmp_path, make_rows(bar_time=BAR + TF_MS), models)
    files = sorted((published_dir(tmp_path) / "history").iterdir())
    assert len(first) == 1 and len(files) == 2 and first[0] in files
    assert first[0].read_bytes() == first_bytes
    history = read_history(tmp_path)
    assert history.height == 6
    # 2026-01-01 00:00 UTC + 15 min + 30 s, then one bar later
    assert history["published_at"].unique().to_list() == [
        BAR + TF_MS + 30_000,
        BAR + 2 * TF_MS + 30_000,
    ]
    assert read_latest(tmp_path).rows["SOLUSDT"]["bar_time"] == BAR + TF_MS


def test_unchanged_model_files_are_not_rewritten(tmp_path, models):
    write_published(tmp_path, make_rows(), models)
    path = exported_transformer_dir(tmp_path, "BTCUSDT") / "state_dict.pt"
    inode = os.stat(path).st_ino
    write_published(tmp_path, make_rows(bar_time=BAR + TF_MS), models)
    assert os.stat(path).st_ino == inode
    new = {**models, "BTCUSDT": tiny_deep_files("BTCUSDT", model=tiny_model(seed=1))}
    write_published(tmp_path, make_rows(bar_time=BAR + 2 * TF_MS), new)
    assert os.stat(path).st_ino != inode
    assert path.read_bytes() == new["BTCUSDT"]["state_dict.pt"]


def test_load_published_deep_round_trip(tmp_path, models):
    write_published(tmp_path, make_rows(), models)
    assert sorted(
        p.name for p in exported_transformer_dir(tmp_path, "ETHUSDT").iterdir()
    ) == sorted(TRANSFORMER_EXPORT_FILES)
    model, calibrator, version = load_exported_transformer(tmp_path, "ETHUSDT")
    original = tiny_model()
    assert version == "3" and calibrator == Calibrator()
    assert model.config == TINY
    for key, value in original.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(2, TINY.window, TINY.n_features, generator=torch.Generator().manual_seed(1))
    a = model.mc_predict(x, n_samples=4, seed=3)
    b = original.mc_predict(x, n_samples=4, seed=3)
    np.testing.assert_array_equal(a["p_up"], b["p_up"])
    np.testing.assert_array_equal(calibrator.transform(a["p_up"]), a["p_up"])


def test_load_published_deep_names_what_is_missing(tmp_path, models):
    with pytest.raises(PublishedFileError, match=r"no exported deep model for BTCUSDT"):
        load_exported_transformer(tmp_path, "BTCUSDT")
    write_published(tmp_path, make_rows(), models)
    (exported_transformer_dir(tmp_path, "BTCUSDT") / "calibrator.json").unlink()
    with pytest.raises(PublishedFileError, match=r"lacks \['calibrator.json'\]"):
        load_exported_transformer(tmp_path, "BTCUSDT")
    (exported_transformer_dir(tmp_path, "ETHUSDT") / "config.json").write_text("{not json")
    with pytest.raises(PublishedFileError, match=r"ETHUSDT is corrupt"):
        load_exported_transformer(tmp_path, "ETHUSDT")


def test_published_columns_are_the_users_interface():
    # Services, the DuckDB view and the append-only history read these names: a rename would
    # split the history (old files keep the old name), so they are pinned here by hand.
    assert list(PUBLISHED_SCHEMA) == [
        "symbol",
        "bar_time",
        "bar_close_time",
        "published_at",
        "source",
        "close",
        "deep_p_up",
        "deep_mu",
        "deep_sigma",
        "deep_aleatoric",
        "deep_epistemic",
        "deep_epistemic_p",
        "deep_confidence",
        "mc_samples",
        "deep_version",
        "lgbm_p_up",
        "lgbm_confidence",
        "lgbm_version",
        "ensemble_p_up",
        "ensemble_confidence",
        "w_lgbm",
        "regime",
        "regime_state",
        "entry_threshold",
        "signal",
        "position",
        "size",
        "stop_loss",
        "take_profit",
        "kill_switch",
        "kill_switch_reason",
        "ratio_btc_eth",
        "ratio_eth_sol",
        "data_lag_s",
        "paper_equity",
        "paper_drawdown",
        "decision_model",
        "horizon",
        "expected_net_bps",
        "decision_reason",
        "closed_side",
    ]


@pytest.mark.parametrize(
    ("symbol", "column", "value", "match"),
    [
        ("ETHUSDT", "signal", "BUY", r"'signal' has \['BUY'\]"),
        ("BTCUSDT", "kill_switch", "PAUSED", r"'kill_switch' has \['PAUSED'\]"),
        ("SOLUSDT", "deep_p_up", 1.5, r"outside \[0, 1\]"),
        ("BTCUSDT", "ensemble_confidence", -0.1, r"outside \[0, 1\]"),
        ("BTCUSDT", "close", "100", r"'close' is '100' \(str\), expected a float"),
        ("BTCUSDT", "bar_time", 1.5, r"'bar_time' is 1.5 \(float\), expected an integer"),
        ("BTCUSDT", "mc_samples", True, r"'mc_samples' is True \(bool\), expected an integer"),
        ("BTCUSDT", "deep_version", 3, r"'deep_version' is 3 \(int\), expected a string"),
        ("BTCUSDT", "size", None, r"'size' is None \(NoneType\), expected a float"),
        ("BTCUSDT", "deep_mu", "NaN", r"'deep_mu' is 'NaN' \(str\), expected a float"),
    ],
)
def test_bad_values_in_the_json_are_a_published_file_error(
    tmp_path, models, symbol, column, value, match
):
    path = write_published(tmp_path, make_rows(), models)
    doc = json.loads(path.read_text())
    [row] = [r for r in doc["rows"] if r["symbol"] == symbol]
    row[column] = value
    path.write_text(json.dumps(doc))
    with pytest.raises(
        PublishedFileError, match=rf"latest_predictions.json: row {symbol}: .*{match}"
    ):
        read_latest(tmp_path)


def test_valid_json_values_still_parse(tmp_path, models):
    # Nullable levels stay None, an integral float written as an int is accepted as a float.
    path = write_published(tmp_path, make_rows(), models)
    doc = json.loads(path.read_text())
    doc["rows"][0]["close"] = 100
    path.write_text(json.dumps(doc))
    latest = read_latest(tmp_path)
    assert latest.rows["BTCUSDT"]["close"] == 100
    assert latest.rows["ETHUSDT"]["stop_loss"] is None


def _models_at(version: str, seed: int = 0) -> dict[str, dict[str, bytes]]:
    files = tiny_deep_files("BTCUSDT", version=version, model=tiny_model(seed=seed))
    return {
        s: {**files, "meta.json": tiny_deep_files(s, version=version)["meta.json"]} for s in SYMBOLS
    }


def test_each_export_is_a_versioned_directory_behind_one_pointer(tmp_path):
    v3, v4 = _models_at("3"), _models_at("4", seed=1)
    write_published(tmp_path, make_rows(deep_version="3"), v3)
    deep = exported_transformer_dir(tmp_path, "BTCUSDT")
    assert deep.is_symlink() and deep.resolve().name.startswith("deep-v3-")
    resolved_v3 = current_export_dir(tmp_path, "BTCUSDT")  # a reader resolves the pointer once
    write_published(tmp_path, make_rows(deep_version="4", bar_time=BAR + TF_MS), v4)
    # ... and keeps reading v3's files after v4 is published
    assert read_export_dir(resolved_v3, "BTCUSDT") == v3["BTCUSDT"]
    assert read_exported_transformer(tmp_path, "BTCUSDT") == v4["BTCUSDT"]
    assert json.loads((deep / "meta.json").read_text())["version"] == "4"  # the user path
    assert load_exported_transformer(tmp_path, "BTCUSDT")[2] == "4"
    # v5 and v6: only the newest 2 version directories stay
    write_published(
        tmp_path, make_rows(deep_version="5", bar_time=BAR + 2 * TF_MS), _models_at("5")
    )
    write_published(
        tmp_path, make_rows(deep_version="6", bar_time=BAR + 3 * TF_MS), _models_at("6")
    )
    kept = sorted(p.name.split("-")[1] for p in deep.parent.glob("deep-v*"))
    assert kept == ["v5", "v6"] and not resolved_v3.exists()
    assert sorted(p.name for p in deep.parent.iterdir() if not p.name.startswith("deep-v")) == [
        "deep"
    ]  # no temporary directories or links left behind
    with pytest.raises(PublishedFileError, match="replaced while reading; retry"):
        read_export_dir(resolved_v3, "BTCUSDT")


def test_an_export_in_the_old_flat_directory_is_replaced_by_the_pointer(tmp_path, models):
    deep = exported_transformer_dir(tmp_path, "BTCUSDT")
    deep.mkdir(parents=True)
    for name, data in _models_at("2")["BTCUSDT"].items():
        (deep / name).write_bytes(data)
    assert load_exported_transformer(tmp_path, "BTCUSDT")[2] == "2"  # old layout still readable
    write_published(tmp_path, make_rows(), models)
    assert deep.is_symlink() and load_exported_transformer(tmp_path, "BTCUSDT")[2] == "3"


def test_history_of_schema_1_reads_with_null_decision_columns(tmp_path, models):
    """History files written before the decision engine keep the paper position replayable."""
    old = make_rows().drop(
        "decision_model", "horizon", "expected_net_bps", "decision_reason", "closed_side"
    )
    old_file = history_dir(tmp_path) / "predictions-1767226530000-0000aaaa.parquet"
    old_file.parent.mkdir(parents=True)
    old.write_parquet(old_file)
    write_published(tmp_path, make_rows(bar_time=BAR + TF_MS), models)
    history = read_history(tmp_path)
    assert history.height == 6 and dict(history.schema) == PUBLISHED_SCHEMA
    first, second = history.head(3), history.tail(3)
    assert first.get_column("decision_model").null_count() == 3
    assert first.get_column("signal").to_list() == ["ENTRY_LONG", "HOLD", "EXIT"]
    assert second.get_column("decision_model").to_list() == ["ensemble", "flat", "lgbm"]
