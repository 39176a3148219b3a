"""The seed's commands by their new names, as a user runs them: `levibot ingest` (the seed's
`python ingest_multi.py`), `levibot train --symbol BTCUSDT --epochs 30` (`train_deep_tfm.py`) and
`levibot smoke` (`smoke_test.sh`) as real processes on a fresh home, every run recorded in the
Dagster instance `make dev` opens; their errors; and every option's help showing its default."""

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient

from levibot_pipelines.cli import DEMO_DEFAULTS, DefaultsHelp, build_parser, command_settings, main
from levibot_pipelines_tests.conftest import SESSION_ENV, recent_start

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(
    r"^\[train\] deep_tfm_model BTCUSDT epoch (\d+)/2: train_loss ([\d.]+), "
    r"val_loss ([\d.]+), val_acc ([\d.]+) \(",
    re.MULTILINE,
)


def levibot(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """`levibot ARGS` in a fresh process on ``home`` with the tiny test settings (one epoch
    unless told otherwise), DAGSTER_HOME set as `make dev` sets it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update(SESSION_ENV, LEVIBOT_HOME=str(home), LEVIBOT_START=recent_start(20))
    env.update(DAGSTER_HOME=str(home / "dagster"), MLFLOW_DISABLE_TELEMETRY="true")
    return subprocess.run(
        [sys.executable, "-m", "levibot_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture
def clean_env(monkeypatch, tmp_path) -> Path:
    """The process environment of a user with only LEVIBOT_HOME set (a fresh home)."""
    for name in [k for k in os.environ if k.startswith("LEVIBOT_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("LEVIBOT_HOME", str(home))
    return home


def _ingest(home: Path) -> None:
    out = levibot(["ingest"], home)
    assert out.returncode == 0, out.stderr[-3000:]
    path = home / "features" / "cross_asset_features.parquet"
    table = pl.read_parquet(path)
    counts = table.group_by("symbol").len().sort("symbol")
    assert counts["symbol"].to_list() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    each = counts["len"][0]
    assert counts["len"].to_list() == [each] * 3  # one common grid
    assert f"feature table: {path}\n" in out.stdout
    assert f"shape: {table.height:,} rows x {table.width} columns\n" in out.stdout
    assert f"symbols: BTCUSDT, ETHUSDT, SOLUSDT ({each:,} rows each)\n" in out.stdout
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert f"[ingest] ohlcv {symbol} ... done (" in out.stdout
    assert "[features] cross_asset_features ... done (" in out.stdout


def _train(home: Path) -> None:
    out = levibot(["train", "--symbol", "BTCUSDT", "--epochs", "2"], home)
    assert out.returncode == 0, out.stderr[-3000:]
    epochs = EPOCH_LINE.findall(out.stdout)
    assert [e[0] for e in epochs] == ["1", "2"], out.stdout  # --epochs 2 over LEVIBOT_EPOCHS=1
    # The printed epochs are the ones MLflow recorded for the registered version.
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    run_id = client.get_model_version("levibot-deep-BTCUSDT", "1").run_id
    for metric, column in (("train_loss", 1), ("val_loss", 2), ("val_acc", 3)):
        stored = sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))
        assert [f"{v:.4f}" for _, v in stored] == [e[column] for e in epochs], metric
    best = min(epochs, key=lambda e: float(e[2]))  # lowest val_loss, the first on ties
    assert (
        f"BTCUSDT: best epoch {best[0]} (val_loss {best[2]}, val_acc {best[3]}): "
        "its weights are the ones saved" in out.stdout
    )
    assert "BTCUSDT: Transformer trained 2 of 2 epoch(s)\n" in out.stdout
    assert "BTCUSDT: saved as levibot-deep-BTCUSDT version 1 in the MLflow registry" in out.stdout
    assert "BTCUSDT: champion: promoted" in out.stdout


def _smoke(home: Path) -> None:
    out = levibot(["smoke"], home)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.rstrip().endswith("SMOKE TEST PASSED")
    for symbol in ("ETHUSDT", "SOLUSDT"):  # publishing needs every symbol: smoke trains them
        assert f"[smoke] {symbol} has no trained models: training it" in out.stdout
    assert "[smoke] BTCUSDT has no trained models" not in out.stdout
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        for step in ("model trained", "calibration complete", "API /ml/predict_deep"):
            assert f"[smoke] {step} ({symbol}): PASS" in out.stdout
    assert "[smoke] API /healthz: PASS - 200 ok" in out.stdout


def _runs_in_the_instance(home: Path) -> None:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        runs = instance.get_runs()
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        assert Counter(r.job_name for r in runs) == {
            "ingest_job": 3,
            "features_job": 1,
            "training_job": 3,
            "publish_job": 1,
        }
        (train,) = [
            r for r in runs if r.tags.get("levibot/command", "").startswith("levibot train")
        ]
        assert train.tags["levibot/command"] == "levibot train --symbol BTCUSDT --epochs 2"
        assert train.tags["dagster/partition"] == "BTCUSDT"
        deep = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("deep_tfm_model"), asset_partitions=["BTCUSDT"]
            ),
            limit=5,
        ).records
        assert [r.event_log_entry.run_id for r in deep] == [train.run_id]


def _check_only(monkeypatch, capsys, home: Path) -> tuple[int, str]:
    """`levibot smoke --check-only` in this process (it runs no pipeline step) on ``home``."""
    for name in [k for k in os.environ if k.startswith("LEVIBOT_")]:
        monkeypatch.delenv(name)
    for name, value in {**SESSION_ENV, "LEVIBOT_HOME": str(home)}.items():
        monkeypatch.setenv(name, value)
    code = main(["smoke", "--check-only"])
    return code, capsys.readouterr().out


def test_ingest_train_smoke_as_the_seed_runs_them(tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    _ingest(home)
    code, out = _check_only(monkeypatch, capsys, home)  # nothing trained yet: FAIL, say what
    assert code == 1
    assert "[smoke] model trained (BTCUSDT): FAIL - no champion of levibot-lgbm-BTCUSDT" in out
    assert "run levibot train --symbol BTCUSDT" in out
    assert out.rstrip().splitlines()[-1].startswith("SMOKE TEST FAILED: model trained (BTCUSDT), ")
    _train(home)
    _smoke(home)
    _runs_in_the_instance(home)  # --check-only ran nothing
    halted = levibot(["kill-switch", "engage", "--reason", "maintenance"], home)
    assert halted.returncode == 0, halted.stderr
    code, out = _check_only(monkeypatch, capsys, home)  # a HALTED API is not healthy
    assert code == 1
    assert "[smoke] API /healthz: FAIL - 503 unhealthy" in out and "maintenance" in out
    assert out.rstrip().splitlines()[-1] == "SMOKE TEST FAILED: API /healthz"


def test_a_bad_symbol_names_it_and_the_known_ones(clean_env, capsys):
    assert main(["train", "--symbol", "DOGE/USDT", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "levibot: --symbol 'DOGE/USDT' is not a configured symbol; known symbols: BTCUSDT, "
        "ETHUSDT, SOLUSDT (LEVIBOT_SYMBOLS; BTC/USDT spellings are accepted)"
    )


def test_train_before_ingest_says_to_ingest_and_runs_nothing(clean_env, capsys):
    assert main(["train", "--symbol", "btc/usdt"]) == 2
    path = clean_env / "features" / "cross_asset_features.parquet"
    err = capsys.readouterr().err.strip()
    assert err == f"levibot: no feature table at {path}: run `levibot ingest` first"
    assert not (clean_env / "dagster").exists()


def test_a_failed_ingest_run_is_one_line_naming_the_run_and_exit_1(clean_env, monkeypatch, capsys):
    empty = clean_env.parent / "no-candles"
    empty.mkdir()
    monkeypatch.setenv("LEVIBOT_SOURCE", "files")
    monkeypatch.setenv("LEVIBOT_FILES_DIR", str(empty))
    assert main(["ingest"]) == 1
    captured = capsys.readouterr()
    assert "[ingest] ohlcv BTCUSDT ... FAILED: ValueError: no candle file for symbol 'BTCUSDT'" in (
        captured.out
    )
    err = captured.err.strip().splitlines()
    assert err[-1].startswith("levibot: ingest_job[BTCUSDT] failed: ohlcv: ValueError: no candle")
    assert "ingest_job[SOLUSDT] failed" in err[-1]  # every symbol was tried
    assert err[-1].endswith("; the feature table was not rebuilt")
    with dg.DagsterInstance.from_config(str(clean_env / "dagster")) as instance:
        runs = instance.get_runs()
    assert [r.status for r in runs] == [dg.DagsterRunStatus.FAILURE] * 3


def _options(parser: argparse.ArgumentParser, path: str = "levibot"):
    """(command path, action) of every option of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_has_help_that_names_its_default():
    options = list(_options(build_parser()))
    commands = {path for path, _ in options}
    for command in ("levibot train", "levibot smoke", "levibot evaluate", "levibot serve"):
        assert command in commands
    for path, action in options:
        shown = DefaultsHelp("levibot")._get_help_string(action) % vars(action)
        where = f"{path} {action.option_strings[0]}: {shown!r}"
        assert action.help, where
        if action.required:
            assert "required" in shown, where
            continue
        assert "default" in shown, where
        if action.default not in (None, ""):
            assert str(action.default) in shown, where


def test_train_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: every configured symbol, LEVIBOT_SYMBOLS)" in text
    assert "(default: LEVIBOT_EPOCHS, 4 when unset)" in text
    assert "(slower: it trains both models once per fold) (default: False)" in text


def test_demo_takes_its_defaults_from_one_place_and_a_set_variable_wins(clean_env, monkeypatch):
    args = build_parser().parse_args(["demo"])
    models = command_settings(args).models
    assert (
        (models.report_folds, models.mc_samples)
        == (1, 20)
        == tuple(int(DEMO_DEFAULTS[k]) for k in ("LEVIBOT_REPORT_FOLDS", "LEVIBOT_MC_SAMPLES"))
    )
    monkeypatch.setenv("LEVIBOT_MC_SAMPLES", "7")
    models = command_settings(args).models
    assert (models.report_folds, models.mc_samples) == (1, 7)
    # `make demo` is `levibot demo` with nothing added: no second copy of the defaults.
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert [line.strip() for line in recipe] == ["$(VENV)/bin/levibot demo"]


def test_train_epochs_reach_the_settings_and_other_commands_keep_the_default(clean_env):
    parser = build_parser()
    assert command_settings(parser.parse_args(["train", "--epochs", "30"])).models.epochs == 30
    assert command_settings(parser.parse_args(["train"])).models.epochs == 4
    assert command_settings(parser.parse_args(["smoke"])).models.epochs == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--epochs", "0"])
