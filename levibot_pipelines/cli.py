"""The ``levibot`` command: ``demo``, ``status``, ``evaluate``, ``serve`` and ``kill-switch``."""

import argparse
import errno
import getpass
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.home import dagster_dir, mlflow_tracking_uri, warehouse_path
from levibot_pipelines.adapters.killswitch_store import KillSwitch, KillSwitchStatus
from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.timeframes import utc_text
from levibot_pipelines.settings import Settings, SettingsError
from levibot_pipelines.usecases import risk, status

INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster.yaml"
DEMO_JOBS = ("ingest_job", "features_job", "training_job", "publish_job")
# `levibot evaluate`'s folds: train, val, calib, test bars without --walk, and the purge
# (--purge applies with --walk only; without it the purge is this default).
EVALUATE_WALK = (20_000, 3_000, 3_000, 4_000)
EVALUATE_PURGE = 130
# `levibot evaluate`'s own budget (flag, default, help): cheaper than the pipeline's LEVIBOT_*.
EVALUATE_BUDGET: tuple[tuple[str, int, str], ...] = (
    ("--purge", EVALUATE_PURGE, "bars purged between parts (with --walk)"),
    ("--epochs", 4, "Transformer epochs per fold"),
    ("--mc-samples", 20, "MC dropout draws per prediction"),
    ("--max-train-samples", 8000, "Transformer training windows drawn per epoch"),
    ("--seed", 0, "seed of every random step"),
)


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``$LEVIBOT_HOME/dagster`` (the one ``make dev``
    uses), created from the project's ``dagster.yaml`` on first use."""
    home = dagster_dir(settings.home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        template = INSTANCE_TEMPLATE.read_text() if INSTANCE_TEMPLATE.exists() else ""
        config.write_text(template or "telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def status_table(settings: Settings, now_ms: int) -> pl.DataFrame:
    """Per symbol: stored bars, newest bar and data-time staleness; plus the feature table."""
    store = ParquetStore(settings.home)
    return status.data_status(store, settings.market.symbols, settings.market.timeframe_ms, now_ms)


def _run_demo_jobs(settings: Settings) -> tuple[float, float]:
    """Ingest, features, training and publish in process; (data seconds, total seconds)."""
    from levibot_pipelines.definitions import load_definitions

    instance = open_instance(settings)
    definitions = load_definitions()
    jobs = {name: definitions.resolve_job_def(name) for name in DEMO_JOBS}
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

    def run(job: str, partition: str | None = None) -> None:
        jobs[job].execute_in_process(partition_key=partition, instance=instance, run_config=quiet)

    started = time.perf_counter()
    for symbol in settings.market.symbols:
        run("ingest_job", symbol)
    run("features_job")
    data_s = time.perf_counter() - started
    for symbol in settings.market.symbols:
        print(
            f"training and evaluating {symbol} (profile {settings.models.profile}) ...", flush=True
        )
        run("training_job", symbol)
    print("publishing the latest predictions ...", flush=True)
    run("publish_job")
    return data_s, time.perf_counter() - started


def print_demo_tables(settings: Settings, now_ms: int) -> None:
    """The data, newest features, models, backtest and published predictions under the home."""
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_rows=20, tbl_cols=20, tbl_width_chars=120):
        print(status_table(settings, now_ms))
        newest = status.newest_feature_rows(warehouse_path(settings.home))
        print("newest feature rows (DuckDB view cross_asset_features):")
        print(newest)
        print(model_summary(settings))
        print(backtest_summary(settings))
        print(predictions_summary(settings))


def cmd_demo(settings: Settings) -> int:
    data_s, elapsed = _run_demo_jobs(settings)
    print(
        f"\nlevibot demo: source={settings.market.source}, home={settings.home} "
        f"(data {data_s:.1f} s, total {elapsed:.1f} s)"
    )
    if settings.market.source == "synthetic":
        print("NOTE: the synthetic source is a seeded simulator, NOT market data.")
    print_demo_tables(settings, int(time.time() * 1000))
    base = f"http://{settings.serving.api_host}:{settings.serving.api_port}"
    print(
        "\nNext:\n"
        f"  make dev                 Dagster UI at http://127.0.0.1:3000 on this same instance "
        f"({dagster_dir(settings.home)})\n"
        f"  .venv/bin/levibot serve  the read-only API at {base} (docs at {base}/docs), e.g.\n"
        f"    curl '{base}/ml/predict_ensemble?symbol=BTCUSDT'\n"
        f"    curl {base}/metrics/prom\n"
        "  .venv/bin/levibot kill-switch status"
    )
    return 0


def backtest_summary(settings: Settings) -> str:
    """Per symbol: the policy backtest of the walk-forward predictions, net of costs."""
    table = status.backtest_table(settings.home, settings.market.symbols)
    if table is None:
        return "\npolicy backtest: no report yet"
    costs = f"{settings.trading.fee_bps:g} bps fees + slippage per side"
    return f"\npolicy backtest on the walk-forward test bars (net of {costs}):\n{table}"


def predictions_summary(settings: Settings) -> str:
    """The published latest predictions, one row per symbol."""
    published = status.published_status(settings.home)
    if published is None:
        return "\nlatest predictions: nothing published yet"
    tail = "".join(f"\n  kill-switch: {r}" for r in published.kill_switch_reasons)
    return f"\nlatest predictions ({published.path}):\n{published.table}{tail}"


def model_summary(settings: Settings) -> str:
    """Per symbol: champion versions, ensemble weight and walk-forward test metrics."""
    store = mlflow_tracking_uri(settings.home, settings.models.mlflow_tracking_uri)
    lines = [f"\nmodels (walk-forward test windows; MLflow store {redact_url(store)}):"]
    for symbol, m in status.model_status(settings.home, settings.market.symbols).items():
        if m is None:
            lines.append(f"{symbol}: no report yet")
            continue
        lines.append(
            f"{symbol}: {m.n_test} test bars in {m.folds} fold(s); champions "
            f"lgbm v{m.lgbm_version}, deep v{m.deep_version}, ensemble w_lgbm={m.w_lgbm:.2f}"
        )
        lines.append(str(m.metrics))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
    from levibot_pipelines.usecases.evaluate import eval_config, run_evaluate

    # Files are replayed whole unless told otherwise; other sources start at LEVIBOT_START.
    start = args.start or ("2000-01-01" if args.source == "files" else None)
    given = {
        "LEVIBOT_SOURCE": args.source,
        "LEVIBOT_FILES_DIR": args.files_dir,
        "LEVIBOT_SYMBOLS": args.symbols,
        "LEVIBOT_START": start,
    }
    settings = Settings.from_env(overrides={k: v for k, v in given.items() if v})
    (train, val, calib, test), purge = EVALUATE_WALK, EVALUATE_PURGE
    if args.walk:
        try:
            train, val, calib, test = (int(v) for v in args.walk.split(","))
        except ValueError:
            raise SettingsError(
                f"--walk={args.walk!r}: expected TRAIN,VAL,CALIB,TEST bar counts"
            ) from None
        purge = args.purge
    profile, cfg = eval_config(
        args.profile,
        walk=WalkForwardConfig(train=train, val=val, calib=calib, test=test, purge=purge),
        epochs=args.epochs,
        mc_samples=args.mc_samples,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        horizon=settings.models.label_horizon,
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


def _print_kill_switch(ks: KillSwitchStatus, reducing_factor: float) -> None:
    multiplier = ks.multiplier(reducing_factor)
    print(f"kill-switch: {ks.state} (size multiplier {multiplier:g})")
    for name, e in sorted(ks.entries.items()):
        since = utc_text(e["since"], "seconds")
        print(f"  {name}: {e['state']} by {e['by']} since {since}: {e['reason']}")
    print(f"updated at: {utc_text(ks.updated_at, 'seconds')}")


def cmd_kill_switch(args: argparse.Namespace, settings: Settings) -> int:
    switch = KillSwitch(settings.home)
    by = getattr(args, "by", None) or getpass.getuser()
    if args.action == "engage":
        ks = risk.engage(switch, args.state, args.reason, by)
    elif args.action == "release":
        ks = risk.release(switch, by, args.reason, all_entries=args.all)
    else:
        ks = switch.status()
    if getattr(args, "json", False):
        doc = {
            "state": ks.state,
            "entries": ks.entries,
            "updated_at": ks.updated_at,
            "multiplier": ks.multiplier(settings.trading.reducing_factor),
            "reason": ks.reason(),
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_kill_switch(ks, settings.trading.reducing_factor)
    return 0


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    summary = "purged walk-forward of LightGBM, Transformer, ensemble and baselines on your candles"
    ev = sub.add_parser(
        "evaluate",
        help=summary,
        description=f"{summary}. The budget options below are this command's own (a cheaper "
        "run than production), separate from the LEVIBOT_* settings the pipeline trains with.",
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
        "--walk",
        help="TRAIN,VAL,CALIB,TEST bars per fold (default "
        + ",".join(str(v) for v in EVALUATE_WALK)
        + ")",
    )
    budget = ev.add_argument_group(
        "evaluate budget", "levibot evaluate's own defaults, not read from LEVIBOT_* settings"
    )
    for flag, default, text in EVALUATE_BUDGET:
        budget.add_argument(flag, type=int, default=default, help=f"{text} (default %(default)s)")


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


def build_parser() -> argparse.ArgumentParser:
    """The ``levibot`` argument parser: one subcommand per ``cmd_*`` function."""
    parser = argparse.ArgumentParser(prog="levibot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "demo",
        help="ingest, build features, train, backtest and publish offline (LEVIBOT_SOURCE)",
    )
    sub.add_parser("status", help="per-asset row counts, newest bar and data-time staleness")
    _add_evaluate_parser(sub)
    _add_kill_switch_parser(sub)
    serve = sub.add_parser("serve", help="the read-only HTTP API over the published predictions")
    serve.add_argument("--host", default=None, help="default LEVIBOT_API_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default LEVIBOT_API_PORT (8000)")
    return parser


def _os_error_text(exc: OSError) -> str:
    """One line for a file-system error: ``<what> (<path>): <strerror>``."""
    if isinstance(exc, PermissionError):
        what = "permission denied"
    elif exc.errno == errno.ENOSPC:
        what = "disk full"
    elif isinstance(exc, (NotADirectoryError, FileExistsError)):
        what = "a file is in the way of a directory (is LEVIBOT_HOME a file?)"
    else:
        what = "file system error"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{what}{where}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args)
        settings = Settings.from_env()
        if args.command == "kill-switch":
            return cmd_kill_switch(args, settings)
        if args.command == "serve":
            return cmd_serve(args, settings)
        return {"demo": cmd_demo, "status": cmd_status}[args.command](settings)
    except (SettingsError, ValueError) as exc:
        print(f"levibot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"levibot: {_os_error_text(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
