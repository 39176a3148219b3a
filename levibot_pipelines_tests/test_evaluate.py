"""`levibot evaluate` as a quant runs it on a small synthetic history; the walk-forward core."""

import json
import subprocess
import sys
from datetime import date, timedelta

import numpy as np
import pytest

from levibot_pipelines.core.data.features import build_features
from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, evaluate_symbol, symbol_data
from levibot_pipelines.core.models.transformer import TransformerConfig
from levibot_pipelines_tests.conftest import TF_MS, recent_start, synthetic_long

MODEL_KEYS = {"lgbm", "deep", "ensemble", "base_rate", "last_return", "reversal"}
METRIC_KEYS = {"auc", "log_loss", "brier", "bss", "ece", "acc_at_coverage"}
BACKTEST_KEYS = {
    "sharpe",
    "sharpe_daily",
    "psr",
    "max_drawdown",
    "win_rate",
    "turnover",
    "n_trades",
    "costs_paid",
}
TINY = TransformerConfig(window=16, d_model=16, n_heads=2, n_layers=1, d_ff=32)
WALK = WalkForwardConfig(train=1000, val=250, calib=250, test=300, purge=20)


def test_eval_config_takes_epochs_and_mc_samples_from_its_caller():
    # No defaults to drift from the settings LEVIBOT_EPOCHS / LEVIBOT_MC_SAMPLES.
    with pytest.raises(TypeError, match="epochs.*mc_samples"):
        EvalConfig(transformer=TINY)
    with pytest.raises(ValueError, match="mc_samples must be an integer >= 1, got 0"):
        EvalConfig(transformer=TINY, walk=WALK, horizon=1, epochs=1, mc_samples=0)
    cfg = EvalConfig(transformer=TINY, walk=WALK, horizon=1, epochs=2, mc_samples=7)
    kwargs = cfg.transformer_kwargs(seed=1)
    assert (kwargs["epochs"], kwargs["mc_samples"]) == (2, 7)


def test_eval_config_takes_the_walk_and_the_horizon_from_its_caller():
    # No defaults to drift from the settings LEVIBOT_WALK / LEVIBOT_PURGE / LEVIBOT_LABEL_HORIZON.
    with pytest.raises(TypeError, match="walk.*horizon"):
        EvalConfig(transformer=TINY, epochs=1, mc_samples=1)
    with pytest.raises(TypeError, match="purge"):
        WalkForwardConfig(train=1000, val=250, calib=250, test=300)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="horizon must be an integer >= 1, got 0"):
        EvalConfig(transformer=TINY, walk=WALK, horizon=0, epochs=1, mc_samples=1)


def test_walk_forward_scores_every_model_on_the_same_out_of_sample_bars():
    features = build_features(synthetic_long(3200), tf_ms=TF_MS, horizon=1)
    data = symbol_data(features, "SOLUSDT")
    cfg = EvalConfig(
        transformer=TINY,
        walk=WALK,
        horizon=1,
        epochs=1,
        mc_samples=4,
        max_train_samples=500,
    )
    ev = evaluate_symbol(data, cfg, tf_ms=TF_MS)
    pred = ev.predictions
    # 3200 bars -> 3001 feature rows; windows of 16 start at row 15 and the newest row has no
    # label: 2985 samples. One fold spans 1000+250+250+300+3*20 = 1860, so
    # (2985 - 1860) // 300 + 1 = 4 folds.
    assert len(ev.folds) == 4 and pred.height == 4 * 300
    # Test bars are strictly later than everything each fold fitted on, and never repeat.
    ts = pred["timestamp"].to_numpy()
    assert np.all(np.diff(ts) > 0)
    for fold in ev.folds:
        # Sample k is row k + 15 here (no gaps); calib is the last part anything is fitted on.
        train_end = data.timestamps[fold["calib"][1] - 1 + 15]
        assert fold["test_start_ms"] > train_end
    assert set(ev.metrics) == MODEL_KEYS
    assert ev.metrics["base_rate"]["bss"] == pytest.approx(0.0, abs=1e-12)
    # The reversal rule is the momentum rule mirrored: AUCs sum to 1.
    assert ev.metrics["last_return"]["auc"] + ev.metrics["reversal"]["auc"] == pytest.approx(1.0)
    for name in ("lgbm", "deep", "ensemble"):
        p = pred[f"p_{name}"].to_numpy()
        assert np.all((p >= 0) & (p <= 1)) and p.std() > 0
    assert set(ev.metrics["deep"]["picp"]) == {"0.5", "0.9"}


def test_evaluate_command_writes_the_report(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "levibot_pipelines.cli",
        "evaluate",
        "--source",
        "synthetic",
        "--start",
        recent_start(40),
        "--walk",
        "1200,300,300,400",
        "--purge",
        "40",
        "--profile",
        "small",
        "--epochs",
        "1",
        "--mc-samples",
        "4",
        "--max-train-samples",
        "500",
        "--out",
        str(out),
    ]
    env = {
        "LEVIBOT_HOME": str(tmp_path / "unused"),
        "PATH": "/usr/bin:/bin",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fold 1/" in done.stdout  # progress is shown
    report = json.loads((out / "report.json").read_text())
    assert set(report["symbols"]) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    for sym in report["symbols"].values():
        assert sym["n_test"] == sym["folds"] * 400
        assert set(sym["models"]) == MODEL_KEYS
        for m in sym["models"].values():
            assert METRIC_KEYS <= set(m)
            assert set(m["acc_at_coverage"]) == {"0.1", "0.2", "0.5"}
        bt = sym["backtest"]
        for block in (bt, bt["buy_and_hold"], bt["at_2x_costs"], bt["random_same_turnover"]):
            assert BACKTEST_KEYS <= set(block)
        assert set(bt["models"]) == {"lgbm", "deep"}
        assert bt["costs"] == {"fee_bps": 10.0, "slippage_bps": 2.0}
        assert 0.0 <= bt["max_drawdown"] <= 1.0 and 0.0 <= bt["psr"] <= 1.0
        assert bt["flat"]["n_trades"] == 0 and bt["flat"]["total_return"] == 0.0
        assert bt["buy_and_hold"]["n_trades"] == 1
        # The test span: the first test bar to the bar the last signal fills in.
        assert bt["n_bars"] >= sym["n_test"]
        # The decision engine: one choice per fold, flat among 49 candidates, and a verdict.
        decision = sym["decision"]
        assert len(decision["folds"]) == sym["folds"] and decision["n_candidates"] == 49
        assert decision["verdict"].startswith(("no validated edge", "edge after costs in"))
    assert report["meta"]["profile"] == "small"
    md = (out / "report.md").read_text()
    assert md.count("**Verdict: ") == 3
    assert "| ensemble |" in md and "plots/SOLUSDT_risk_coverage.png" in md
    assert "| policy (ensemble) |" in md and "plots/BTCUSDT_equity.png" in md
    pngs = list((out / "plots").glob("*.png"))
    # Per symbol: 3 reliability diagrams, risk-coverage, equity, drawdown.
    assert len(pngs) == 18 and all(p.read_bytes().startswith(b"\x89PNG") for p in pngs)
    assert not (tmp_path / "unused").exists()  # ran in a temporary home


def test_evaluate_rejects_a_missing_files_dir(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "levibot_pipelines.cli",
            "evaluate",
            "--source",
            "files",
            "--files-dir",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "is not a directory" in done.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp;open;high;low;close;volume\n0;1;1.2;0.9;1.1;5\n", "';'-separated"),
        ("timestamp,open,high,low,close,volume\n", "has no rows"),
        ("timestamp,open,high,low,close,volume\n1680307200,1,1.2,0.9,1.1,5\n", "like seconds"),
        ("time,open,high,low,close,volume\n0,1,1.2,0.9,1.1,5\n", "lacks columns ['timestamp']"),
    ],
)
def test_evaluate_names_a_bad_candle_file_in_one_line(tmp_path, text, message):
    files = tmp_path / "files"
    files.mkdir()
    (files / "BTCUSDT-15m.csv").write_text(text)
    env = {
        "LEVIBOT_HOME": str(tmp_path / "unused"),
        "PATH": "/usr/bin:/bin",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    done = subprocess.run(
        [sys.executable, "-m", "levibot_pipelines.cli", "evaluate", "--source", "files"]
        + ["--files-dir", str(files), "--symbols", "BTCUSDT", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("levibot: ")]
    assert len(lines) == 1, done.stderr
    assert str(files / "BTCUSDT-15m.csv") in lines[0] and message in lines[0]


def test_test_from_scores_only_bars_from_that_date_and_trains_on_everything_before():
    features = build_features(synthetic_long(3200), tf_ms=TF_MS, horizon=1)
    data = symbol_data(features, "BTCUSDT")
    # Sample k is row k + 15 (windows of 16, no gaps): start the test at sample 2400.
    test_from = int(data.timestamps[2400 + 15])
    walk = WalkForwardConfig(train=1000, val=250, calib=250, test=300, purge=20, expanding=True)
    cfg = EvalConfig(
        transformer=TINY,
        walk=walk,
        horizon=1,
        epochs=1,
        mc_samples=2,
        max_train_samples=300,
        test_from_ms=test_from,
    )
    ev = evaluate_symbol(data, cfg, tf_ms=TF_MS)
    # 2985 samples: tests at [2400, 2700) and [2700, 3000) would end past 2985: one fold.
    assert [f["test"] for f in ev.folds] == [(2400, 2700)]
    assert ev.folds[0]["test_start_ms"] == test_from
    assert ev.predictions["timestamp"].min() == test_from
    # Everything before the validation part trains: test 2400 - purge 20 - calib 250 - purge
    # 20 - val 250 - purge 20 = 1840, so train is [0, 1840).
    assert ev.folds[0]["train"] == (0, 1840)
    assert (ev.folds[0]["val"], ev.folds[0]["calib"]) == ((1860, 2110), (2130, 2380))


def test_evaluate_test_from_with_too_short_a_history_names_the_bars_missing(tmp_path):
    start = recent_start(12)
    day_after = (date.fromisoformat(start) + timedelta(days=1)).isoformat()
    cmd = [sys.executable, "-m", "levibot_pipelines.cli", "evaluate", "--source", "synthetic"]
    cmd += ["--start", start, "--test-from", day_after, "--out", str(tmp_path / "out")]
    env = {"LEVIBOT_HOME": str(tmp_path / "unused"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    # One day of 15m bars precedes the date, less the first rows without a full window; a
    # fold needs 20000 + 3000 + 3000 + 3 * 130 = 26390 before its test part.
    assert f"test from {day_after} 00:00 UTC: only " in done.stderr
    assert "a fold needs 26390" in done.stderr and " missing" in done.stderr
    bad = subprocess.run(
        cmd[:-4] + ["--test-from", "June", "--out", "x"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "--test-from='June': expected an ISO date" in bad.stderr
