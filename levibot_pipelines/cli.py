"""The ``levibot`` command: ``demo`` and ``status`` (later: serve, evaluate, kill-switch)."""

import argparse
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.timeframes import staleness_minutes
from levibot_pipelines.settings import Settings, SettingsError

INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster.yaml"


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``$LEVIBOT_HOME/dagster`` (the one ``make dev``
    uses), created from the project's ``dagster.yaml`` on first use."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        template = INSTANCE_TEMPLATE.read_text() if INSTANCE_TEMPLATE.exists() else ""
        config.write_text(template or "telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def status_table(settings: Settings, now_ms: int) -> pl.DataFrame:
    """Per symbol: stored bars, newest bar and data-time staleness; plus the feature table."""
    store = ParquetStore(settings.home)
    tf = settings.timeframe_ms
    rows = []
    for symbol in settings.symbols:
        ts = store.timestamps(symbol)
        last = ts.max() if ts.len() else None
        rows.append((f"ohlcv[{symbol}]", ts.len(), _iso(last), staleness_minutes(last, now_ms, tf)))
    if store.features_path.exists():
        feats = pl.scan_parquet(store.features_path).select(pl.len(), pl.col("timestamp").max())
        n, last = feats.collect().row(0)
        rows.append(("cross_asset_features", n, _iso(last), staleness_minutes(last, now_ms, tf)))
    return pl.DataFrame(
        rows, schema=["asset", "rows", "newest_bar", "staleness_min"], orient="row"
    ).with_columns(pl.col("staleness_min").round(1))


def cmd_demo(settings: Settings) -> int:
    from levibot_pipelines.definitions import load_definitions

    instance = open_instance(settings)
    definitions = load_definitions()
    ingest = definitions.resolve_job_def("ingest_job")
    features = definitions.resolve_job_def("features_job")
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    started = time.perf_counter()
    for symbol in settings.symbols:
        ingest.execute_in_process(partition_key=symbol, instance=instance, run_config=quiet)
    features.execute_in_process(instance=instance, run_config=quiet)
    elapsed = time.perf_counter() - started

    print(f"\nlevibot demo: source={settings.source}, home={settings.home} ({elapsed:.1f} s)")
    if settings.source == "synthetic":
        print("NOTE: the synthetic source is a seeded simulator, NOT market data.")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_rows=20, tbl_cols=20, tbl_width_chars=120):
        print(status_table(settings, int(time.time() * 1000)))
        with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
            newest = conn.sql(
                "SELECT symbol, to_timestamp(timestamp / 1000) AS bar_open, close, ret_1, "
                "ema_20, z_20, vol_20, ratio_BTC_ETH, lead_ret_BTC FROM cross_asset_features "
                "QUALIFY row_number() OVER "
                "(PARTITION BY symbol ORDER BY timestamp DESC) = 1 ORDER BY symbol"
            ).pl()
        print("newest feature rows (DuckDB view cross_asset_features):")
        print(newest)
    print(
        "\nNext: `make dev` opens the Dagster UI at http://127.0.0.1:3000 on this same instance"
        f" ({settings.dagster_home})."
    )
    return 0


def cmd_status(settings: Settings) -> int:
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_rows=50):
        print(status_table(settings, int(time.time() * 1000)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="levibot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="ingest and build features offline (LEVIBOT_SOURCE) and summarise")
    sub.add_parser("status", help="per-asset row counts, newest bar and data-time staleness")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"levibot: {exc}", file=sys.stderr)
        return 2
    return {"demo": cmd_demo, "status": cmd_status}[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
