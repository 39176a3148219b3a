"""The ``levibot`` command: ``demo``, ``status``, ``evaluate``, ``serve`` and ``kill-switch``."""

import argparse
import getpass
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl

from levibot_pipelines.adapters.home import ensemble_weights_path, report_json
from levibot_pipelines.adapters.killswitch_store import KillSwitch, KillSwitchStatus
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.timeframes import staleness_minutes, utc_text
from levibot_pipelines.settings import Settings, SettingsError
from levibot_pipelines.usecases import risk

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


def status_table(settings: Settings, now_ms: int) -> pl.DataFrame:
    """Per symbol: stored bars, newest bar and data-time staleness; plus the feature table."""
    store = ParquetStore(settings.home)
    tf = settings.market.timeframe_ms
    rows = []
    for symbol in settings.market.symbols:
        ts = store.timestamps(symbol)
        last = ts.max() if ts.len() else None
        stale = staleness_minutes(last, now_ms, tf)
        rows.append((f"ohlcv[{symbol}]", ts.len(), utc_text(last), stale))
    if store.features_path.exists():
        feats = pl.scan_parquet(store.features_path).select(pl.len(), pl.col("timestamp").max())
        n, last = feats.collect().row(0)
        stale = staleness_minutes(last, now_ms, tf)
        rows.append(("cross_asset_features", n, utc_text(last), stale))
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
    for symbol in settings.market.symbols:
        ingest.execute_in_process(partition_key=symbol, instance=instance, run_config=quiet)
    features.execute_in_process(instance=instance, run_config=quiet)
    data_s = time.perf_counter() - started
    training = definitions.resolve_job_def("training_job")
    for symbol in settings.market.symbols:
        print(
            f"training and evaluating {symbol} (profile {settings.models.profile}) ...", flush=True
        )
        training.execute_in_process(partition_key=symbol, instance=instance, run_config=quiet)
    print("publishing the latest predictions ...", flush=True)
    definitions.resolve_job_def("publish_job").execute_in_process(
        instance=instance, run_config=quiet
    )
    elapsed = time.perf_counter() - started

    print(
        f"\nlevibot demo: source={settings.market.source}, home={settings.home} "
        f"(data {data_s:.1f} s, total {elapsed:.1f} s)"
    )
    if settings.market.source == "synthetic":
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
        print(model_summary(settings))
        print(backtest_summary(settings))
        print(predictions_summary(settings))
    base = f"http://{settings.serving.api_host}:{settings.serving.api_port}"
    print(
        "\nNext:\n"
        f"  make dev                 Dagster UI at http://127.0.0.1:3000 on this same instance "
        f"({settings.dagster_home})\n"
        f"  .venv/bin/levibot serve  the read-only API at {base} (docs at {base}/docs), e.g.\n"
        f"    curl '{base}/ml/predict_ensemble?symbol=BTCUSDT'\n"
        f"    curl {base}/metrics/prom\n"
        "  .venv/bin/levibot kill-switch status"
    )
    return 0


def backtest_summary(settings: Settings) -> str:
    """Per symbol: the policy backtest of the walk-forward predictions, net of costs."""
    rows = []
    for symbol in settings.market.symbols:
        path = report_json(settings.home, symbol)
        if not path.exists():
            continue
        bt = json.loads(path.read_text())["symbols"][symbol].get("backtest")
        if not bt:
            continue
        for name, m in (
            ("policy (ensemble)", bt),
            ("  gross of costs", bt["gross_of_costs"]),
            ("  at 2x costs", bt["at_2x_costs"]),
            ("  random, same turnover", bt["random_same_turnover"]),
            ("buy and hold", bt["buy_and_hold"]),
        ):
            rows.append(
                {
                    "symbol": symbol,
                    "strategy": name,
                    **{
                        k: m.get(k)
                        for k in ("sharpe", "psr", "max_drawdown", "n_trades", "costs_paid")
                    },
                    "total_return": m.get("total_return"),
                }
            )
    if not rows:
        return "\npolicy backtest: no report yet"
    costs = f"{settings.trading.fee_bps:g} bps fees + slippage per side"
    table = pl.DataFrame(rows).with_columns(pl.col(pl.Float64).round(4))
    return f"\npolicy backtest on the walk-forward test bars (net of {costs}):\n{table}"


def predictions_summary(settings: Settings) -> str:
    """The published latest predictions, one row per symbol."""
    from levibot_pipelines.adapters.prediction_files import read_latest

    latest = read_latest(settings.home)
    if latest is None:
        return "\nlatest predictions: nothing published yet"
    table = (
        pl.DataFrame(list(latest.rows.values()))
        .select(
            "symbol",
            pl.from_epoch("bar_close_time", time_unit="ms").alias("as_of"),
            "ensemble_p_up",
            "deep_p_up",
            "lgbm_p_up",
            "deep_sigma",
            "regime",
            "signal",
            "size",
            "kill_switch",
        )
        .with_columns(pl.col(pl.Float64).round(4))
    )
    reasons = {r["kill_switch_reason"] for r in latest.rows.values() if r["kill_switch_reason"]}
    tail = "".join(f"\n  kill-switch: {r}" for r in sorted(reasons))
    return (
        f"\nlatest predictions ({settings.home / 'published' / 'latest_predictions.json'}):\n"
        f"{table}{tail}"
    )


def model_summary(settings: Settings) -> str:
    """Per symbol: champion versions, ensemble weight and walk-forward test metrics."""
    lines = ["\nmodels (walk-forward test windows; MLflow store " + settings.tracking_uri + "):"]
    for symbol in settings.market.symbols:
        report_path = report_json(settings.home, symbol)
        ensemble_path = ensemble_weights_path(settings.home, symbol)
        if not report_path.exists():
            lines.append(f"{symbol}: no report yet")
            continue
        rep = json.loads(report_path.read_text())["symbols"][symbol]
        ens = json.loads(ensemble_path.read_text()) if ensemble_path.exists() else {}
        lines.append(
            f"{symbol}: {rep['n_test']} test bars in {rep['folds']} fold(s); champions "
            f"lgbm v{ens.get('lgbm_version', '?')}, deep v{ens.get('deep_version', '?')}, "
            f"ensemble w_lgbm={ens.get('w_lgbm', float('nan')):.2f}"
        )
        table = pl.DataFrame(
            [
                {"model": name, **{k: m[k] for k in ("auc", "log_loss", "brier", "bss", "ece")}}
                for name, m in rep["models"].items()
            ]
        ).with_columns(pl.col(pl.Float64).round(4))
        lines.append(str(table))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
    from levibot_pipelines.usecases.evaluate import eval_config, run_evaluate

    overrides = {"LEVIBOT_SOURCE": args.source}
    if args.files_dir:
        overrides["LEVIBOT_FILES_DIR"] = args.files_dir
    if args.symbols:
        overrides["LEVIBOT_SYMBOLS"] = args.symbols
    # Files are replayed whole unless told otherwise; other sources start at LEVIBOT_START.
    start = args.start or ("2000-01-01" if args.source == "files" else None)
    if start:
        overrides["LEVIBOT_START"] = start
    settings = Settings.from_env(overrides=overrides)
    walk = {}
    if args.walk:
        try:
            train, val, calib, test = (int(v) for v in args.walk.split(","))
        except ValueError:
            raise SettingsError(
                f"--walk={args.walk!r}: expected TRAIN,VAL,CALIB,TEST bar counts"
            ) from None
        walk["walk"] = WalkForwardConfig(
            train=train, val=val, calib=calib, test=test, purge=args.purge
        )
    profile, cfg = eval_config(
        args.profile,
        epochs=args.epochs,
        mc_samples=args.mc_samples,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        horizon=settings.models.label_horizon,
        **walk,
    )
    report = run_evaluate(settings, Path(args.out), cfg, profile, progress=_progress)
    for symbol, rep in report["symbols"].items():
        models = rep["models"]
        print(
            f"{symbol}: n_test={rep['n_test']} folds={rep['folds']} "
            + " ".join(
                f"{m}:auc={models[m]['auc']:.3f},bss={models[m]['bss']:+.4f}" for m in models
            )
        )
    return 0


def _progress(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from levibot_pipelines.api import run_server

    run_server(settings, host=args.host, port=args.port)
    return 0


def cmd_status(settings: Settings) -> int:
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_rows=50):
        print(status_table(settings, int(time.time() * 1000)))
    return 0


def _add_kill_switch_parser(sub: argparse._SubParsersAction) -> None:
    ks = sub.add_parser(
        "kill-switch", help="show, engage or release the trading kill-switch (LEVIBOT_HOME)"
    )
    actions = ks.add_subparsers(dest="action", required=True)
    st = actions.add_parser("status", help="effective state, entries and size multiplier")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    en = actions.add_parser("engage", help="engage the manual entry (REDUCING or HALTED)")
    en.add_argument("--state", choices=["REDUCING", "HALTED"], default="HALTED")
    en.add_argument("--reason", required=True, help="why (recorded and published)")
    en.add_argument("--by", default=None, help="who (default: the OS user)")
    rel = actions.add_parser("release", help="clear the manual entry")
    rel.add_argument("--reason", default="", help="why (recorded in the history)")
    rel.add_argument("--by", default=None, help="who (default: the OS user)")
    rel.add_argument(
        "--all",
        action="store_true",
        help="also clear automatic triggers (they re-engage if their condition still holds)",
    )


def _print_kill_switch(status: KillSwitchStatus, reducing_factor: float) -> None:
    multiplier = status.multiplier(reducing_factor)
    print(f"kill-switch: {status.state} (size multiplier {multiplier:g})")
    for name, e in sorted(status.entries.items()):
        since = utc_text(e["since"], "seconds")
        print(f"  {name}: {e['state']} by {e['by']} since {since}: {e['reason']}")
    print(f"updated at: {utc_text(status.updated_at, 'seconds')}")


def cmd_kill_switch(args: argparse.Namespace, settings: Settings) -> int:
    switch = KillSwitch(settings.home)
    by = getattr(args, "by", None) or getpass.getuser()
    if args.action == "engage":
        status = risk.engage(switch, args.state, args.reason, by)
    elif args.action == "release":
        status = risk.release(switch, by, args.reason, all_entries=args.all)
    else:
        status = switch.status()
    if getattr(args, "json", False):
        doc = {
            "state": status.state,
            "entries": status.entries,
            "updated_at": status.updated_at,
            "multiplier": status.multiplier(settings.trading.reducing_factor),
            "reason": status.reason(),
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_kill_switch(status, settings.trading.reducing_factor)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="levibot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo",
        help="ingest, build features, train, backtest and publish offline (LEVIBOT_SOURCE)",
    )
    sub.add_parser("status", help="per-asset row counts, newest bar and data-time staleness")
    ev = sub.add_parser(
        "evaluate",
        help="purged walk-forward of LightGBM, Transformer, ensemble and baselines on your candles",
    )
    ev.add_argument("--source", choices=["files", "synthetic", "ccxt"], default="files")
    ev.add_argument("--files-dir", help="directory of {SYMBOL}-15m.parquet/.csv candle files")
    ev.add_argument("--symbols", help="comma-separated, default LEVIBOT_SYMBOLS")
    ev.add_argument("--start", help="ISO date where history starts (files: all of it)")
    ev.add_argument(
        "--profile", default="auto", help="auto (seed on CUDA, small on CPU), small, seed"
    )
    ev.add_argument("--out", required=True, help="output directory for report.json/.md and plots")
    ev.add_argument(
        "--walk", help="TRAIN,VAL,CALIB,TEST bars per fold (default 20000,3000,3000,4000)"
    )
    ev.add_argument(
        "--purge", type=int, default=130, help="bars purged between parts (with --walk)"
    )
    ev.add_argument("--epochs", type=int, default=4)
    ev.add_argument("--mc-samples", type=int, default=20)
    ev.add_argument("--max-train-samples", type=int, default=8000)
    ev.add_argument("--seed", type=int, default=0)
    _add_kill_switch_parser(sub)
    serve = sub.add_parser("serve", help="the read-only HTTP API over the published predictions")
    serve.add_argument("--host", default=None, help="default LEVIBOT_API_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default LEVIBOT_API_PORT (8000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args)
        settings = Settings.from_env()
        if args.command == "kill-switch":
            return cmd_kill_switch(args, settings)
        if args.command == "serve":
            return cmd_serve(args, settings)
    except (SettingsError, ValueError) as exc:
        print(f"levibot: {exc}", file=sys.stderr)
        return 2
    return {"demo": cmd_demo, "status": cmd_status}[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
