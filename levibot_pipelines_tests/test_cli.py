"""`levibot demo` and `levibot status` as a user runs them: a real process on a fresh home."""

import os
import subprocess
import sys

import duckdb

from levibot_pipelines_tests.conftest import SESSION_ENV, recent_start


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
    status = run(["status"], tmp_path)
    assert status.returncode == 0 and "cross_asset_features" in status.stdout


def test_bad_setting_fails_with_the_variable_name(tmp_path):
    out = run(["status"], tmp_path, LEVIBOT_SOURCE="kafka")
    assert out.returncode == 2
    assert "LEVIBOT_SOURCE='kafka' is not allowed" in out.stderr
