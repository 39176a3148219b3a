"""`levibot demo` and `levibot status` as a user runs them (a real process on a fresh home), the
`evaluate` budget options and the summary texts over the status use case."""

import errno
import json
import os
import subprocess
import sys

import duckdb
import pytest

from levibot_pipelines.adapters.home import ensemble_weights_path, report_json
from levibot_pipelines.cli import (
    backtest_summary,
    build_parser,
    main,
    model_summary,
    predictions_summary,
)
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.conftest import SESSION_ENV, recent_start
from levibot_pipelines_tests.test_status import write_json, write_report


def run(args, home, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIBOT_", "DAGSTER_"))}
    env.update({"LEVIBOT_HOME": str(home), "LEVIBOT_START": recent_start(20), **SESSION_ENV})
    env.update(MLFLOW_DISABLE_TELEMETRY="true", **extra)
    return subprocess.run(
        [sys.executable, "-m", "levibot_pipelines.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_demo_builds_everything_offline_and_status_reports_it(tmp_path):
    out = run(["demo"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "NOT market data" in out.stdout
    for name in ("ohlcv[BTCUSDT]", "ohlcv[ETHUSDT]", "ohlcv[SOLUSDT]", "cross_asset_features"):
        assert name in out.stdout
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        symbols = conn.sql("SELECT DISTINCT symbol FROM cross_asset_features ORDER BY 1").pl()
    assert symbols["symbol"].to_list() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert (tmp_path / "dagster" / "dagster.yaml").exists()  # the instance `make dev` opens
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):  # trained, evaluated and summarised
        assert f"{symbol}: 200 test bars in 1 fold(s); champions lgbm v1, deep v1" in out.stdout
        # Two weights, each named, each as stored: the published champions' and the report's.
        published = json.loads(ensemble_weights_path(tmp_path, symbol).read_text())["w_lgbm"]
        report = json.loads((tmp_path / "reports" / symbol / "report.json").read_text())
        (fold,) = report["symbols"][symbol]["fold_details"]
        assert (
            f"{symbol}: 200 test bars in 1 fold(s); champions lgbm v1, deep v1\n"
            "  w_lgbm, the LightGBM share of the ensemble (each bar then reweighted by "
            "confidence):\n"
            f"    {published:.2f} published: the champions' ensemble "
            f"(models/{symbol}/ensemble.json)\n"
            f"    {fold['ensemble_weight_lgbm']:.2f} in the table's `ensemble` row: fitted in the "
            "report's fold\n"
        ) in out.stdout
        # The decision engine's verdict, as the report stores it, under the backtest table.
        verdict = report["symbols"][symbol]["decision"]["verdict"]
        assert f"\n  {symbol}: {verdict}" in out.stdout
    assert "decision engine (flat unless a validated edge clears the round trip):" in out.stdout
    status = run(["status"], tmp_path)
    assert status.returncode == 0 and "cross_asset_features" in status.stdout


def test_bad_setting_fails_with_the_variable_name(tmp_path):
    out = run(["status"], tmp_path, LEVIBOT_SOURCE="kafka")
    assert out.returncode == 2
    assert "LEVIBOT_SOURCE='kafka' is not allowed" in out.stderr


def test_evaluate_budget_defaults_and_their_help(capsys):
    args = build_parser().parse_args(["evaluate", "--out", "x"])
    budget = (args.purge, args.epochs, args.mc_samples, args.max_train_samples, args.seed)
    assert budget == (130, 4, 20, 8000, 0)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "separate from the LEVIBOT_* settings" in text
    for flag, default in (("--purge PURGE", 130), ("--epochs EPOCHS", 4), ("--seed SEED", 0)):
        assert flag in text and f"(default {default})" in text
    assert "MC dropout draws per prediction (default 20)" in text
    assert "per epoch (default 8000)" in text


def test_summaries_print_the_status_use_case(tmp_path):
    settings = Settings.from_env(env={"LEVIBOT_HOME": str(tmp_path)})
    assert backtest_summary(settings) == "\npolicy backtest: no report yet"
    assert predictions_summary(settings) == "\nlatest predictions: nothing published yet"
    write_report(tmp_path, "BTCUSDT")
    write_json(
        ensemble_weights_path(tmp_path, "BTCUSDT"),
        {"lgbm_version": "2", "deep_version": "3", "w_lgbm": 0.4},
    )
    write_report(tmp_path, "ETHUSDT")
    lines = model_summary(settings).splitlines()
    store = f"sqlite:///{settings.home / 'mlflow.db'}"
    assert lines[1] == f"models (walk-forward test windows; MLflow store {store}):"
    at = lines.index("BTCUSDT: 200 test bars in 1 fold(s); champions lgbm v2, deep v3")
    assert lines[at + 2 : at + 4] == [
        "    0.40 published: the champions' ensemble (models/BTCUSDT/ensemble.json)",
        "    not recorded in the table's `ensemble` row: fitted in the report's fold",
    ]
    at = lines.index("ETHUSDT: 200 test bars in 1 fold(s); champions lgbm v?, deep v?")
    assert (
        lines[at + 2] == "    nan published: the champions' ensemble (models/ETHUSDT/ensemble.json)"
    )
    assert lines[-1] == "SOLUSDT: no report yet"


def test_the_summary_tells_the_published_weight_from_the_report_folds_weights(tmp_path):
    """The issue's case: the champions' ensemble leans on LightGBM (1.00) while the report's
    folds fitted 0.00, 0.93 and 1.00, so its ensemble row is not the published ensemble."""
    settings = Settings.from_env(env={"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_SYMBOLS": "BTCUSDT"})
    write_report(tmp_path, "BTCUSDT")
    path = report_json(tmp_path, "BTCUSDT")
    doc = json.loads(path.read_text())
    doc["symbols"]["BTCUSDT"]["folds"] = 3
    doc["symbols"]["BTCUSDT"]["fold_details"] = [
        {"index": i, "ensemble_weight_lgbm": w} for i, w in enumerate((0.0, 0.93, 1.0))
    ]
    write_json(path, doc)
    write_json(
        ensemble_weights_path(tmp_path, "BTCUSDT"),
        {"lgbm_version": "4", "deep_version": "4", "w_lgbm": 1.0},
    )
    lines = model_summary(settings).splitlines()
    assert lines[2:6] == [
        "BTCUSDT: 200 test bars in 3 fold(s); champions lgbm v4, deep v4",
        "  w_lgbm, the LightGBM share of the ensemble (each bar then reweighted by confidence):",
        "    1.00 published: the champions' ensemble (models/BTCUSDT/ensemble.json)",
        "    0.00, 0.93, 1.00 in the table's `ensemble` row: fitted in each of the report's 3 "
        "folds",
    ]


@pytest.mark.parametrize(
    "args", [["status"], ["kill-switch", "engage", "--state", "HALTED", "--reason", "x"]]
)
def test_a_home_that_is_a_file_is_one_line_naming_the_path(tmp_path, args):
    home = tmp_path / "home"
    home.write_text("not a directory")
    out = run(args, home)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("levibot: ") and str(home) in lines[0], lines


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/h/ohlcv/x.parquet"),
            "levibot: disk full (/h/ohlcv/x.parquet): No space left on device",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/h/killswitch.json"),
            "levibot: permission denied (/h/killswitch.json): Permission denied",
        ),
    ],
)
def test_file_system_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, error, line):
    import levibot_pipelines.cli as cli

    def fail(settings):
        raise error

    monkeypatch.setenv("LEVIBOT_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "cmd_status", fail)
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err.strip() == line
