"""The ``levibot`` command: ``demo``, ``ingest``, ``train``, ``smoke``, ``status``, ``evaluate``,
``serve`` and ``kill-switch``.

``ingest``, ``train``, ``smoke`` and ``demo`` run the pipeline through Dagster on the persistent
instance under ``$LEVIBOT_HOME/dagster`` (the one ``make dev`` opens), so every run, its
materializations and its checks show in the UI; a line per step is printed as the run's events
arrive (``[train] deep_tfm_model BTCUSDT ... done (4.2 s)``).
"""

import argparse
import errno
import getpass
import inspect
import json
import logging
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.home import (
    dagster_dir,
    ensemble_weights_path,
    mlartifacts_dir,
    mlflow_tracking_uri,
    warehouse_path,
)
from levibot_pipelines.adapters.killswitch_store import KillSwitch, KillSwitchStatus
from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.timeframes import utc_text
from levibot_pipelines.settings import ModelSettings, Settings, SettingsError
from levibot_pipelines.usecases import risk, smoke, status, summaries
from levibot_pipelines.usecases.data_home import data_root, data_store

INSTANCE_TEMPLATE = Path(__file__).resolve().parents[1] / "dagster.yaml"
# `levibot demo`'s own defaults, applied where the variable is not set (so `make demo`, which
# calls `levibot demo` without flags, and `levibot demo` are one thing): the most recent
# walk-forward fold reported and fewer MC samples than production, so that it finishes in
# minutes on a CPU.
DEMO_DEFAULTS = {
    "LEVIBOT_REPORT_FOLDS": "1",
    "LEVIBOT_MC_SAMPLES": "20",
    "LEVIBOT_TRAIN_BUDGET_MIN": "4",  # auto keeps `small` on a CPU unless seed fits 4 minutes
}
# What `levibot train` materializes per symbol (`training_job`'s assets; --report adds
# model_report): what publishing a symbol needs.
TRAIN_ASSETS = ("lgbm_model", "deep_tfm_model", "ensemble_weights")
REPORT_ASSET = "model_report"
DEEP_ASSET = "deep_tfm_model"
# The logger the Transformer's training loop writes one record per epoch to.
EPOCH_LOGGER = "levibot_pipelines.core.models.transformer_training"
EPOCH_KEYS = frozenset({"epoch", "train_loss", "val_loss", "val_acc", "seconds"})
# Steps print their own progress lines, so Dagster's console logger only reports errors.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
COMMAND_TAG = "levibot/command"
NOT_MARKET_DATA = "NOTE: the synthetic source is a seeded simulator, NOT market data."
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


class RunFailed(Exception):
    """A Dagster run started by the command did not succeed (exit status 1)."""


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


# --- Dagster runs with a progress display ------------------------------------------------------


@dataclass
class RunProgress:
    """A Dagster event listener that prints one line per event of interest as it arrives:
    ``[label] step partition ...`` when one of ``steps`` starts and ``... done (1.2 s)`` when
    it ends, any step's failure, every check result (PASS, WARN, or FAIL for an ERROR check),
    warnings the steps log, and the Transformer's epochs while ``deep_tfm_model`` runs. Keeps
    those epoch records (``epochs``) and the first failure (``failure``)."""

    label: str
    partition: str | None
    steps: Collection[str]
    max_epochs: int
    epochs: list[dict] = field(default_factory=list)
    failure: str | None = None
    current: str | None = None
    started: dict[str, float] = field(default_factory=dict)

    def say(self, text: str) -> None:
        print(f"[{self.label}] {text}", flush=True)

    def where(self, step: str) -> str:
        return f"{step} {self.partition}" if self.partition else step

    def __call__(self, entry: dg.EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None:
            if entry.level >= logging.WARNING:
                self.say(f"{self.where(entry.step_key or 'run')}: {entry.user_message}")
            return
        kind, step = event.event_type_value, event.step_key
        if kind == "STEP_START":
            self.current = step
            if step in self.steps:
                self.started[step] = entry.timestamp
                self.say(f"{self.where(step)} ...")
        elif kind == "STEP_SUCCESS" and step in self.started:
            seconds = entry.timestamp - self.started[step]
            self.say(f"{self.where(step)} ... done ({seconds:.1f} s)")
        elif kind == "STEP_FAILURE":
            why = _error_text(event.step_failure_data.error)
            self.failure = self.failure or f"{step}: {why}"
            self.say(f"{self.where(step)} ... FAILED: {why}")
        elif kind == "ASSET_CHECK_EVALUATION":
            check = entry.asset_check_evaluation
            error = check.severity == dg.AssetCheckSeverity.ERROR
            state = "PASS" if check.passed else ("FAIL" if error else "WARN")
            asset = check.asset_key.to_user_string()
            self.say(f"{self.where(asset)} check {check.check_name}: {state}")

    def epoch(self, record: dict) -> None:
        """One epoch record of the Transformer's training loop; kept and printed while the
        ``deep_tfm_model`` step runs (model_report's per-fold fits are not this model)."""
        if self.current != DEEP_ASSET:
            return
        self.epochs.append(record)
        self.say(
            f"{self.where(DEEP_ASSET)} epoch {record['epoch']}/{self.max_epochs}: "
            f"train_loss {record['train_loss']:.4f}, val_loss {record['val_loss']:.4f}, "
            f"val_acc {record['val_acc']:.4f} ({record['seconds']:.1f} s)"
        )


def _error_text(error) -> str:
    """The innermost cause of a Dagster ``SerializableErrorInfo``, on one line."""
    while error.cause is not None:
        error = error.cause
    return " ".join(error.message.split()) or error.cls_name or "unknown error"


class _EpochHandler(logging.Handler):
    """Hands the training loop's per-epoch records (``logger.info("epoch %d: %s", epoch,
    record)``) to a :class:`RunProgress`."""

    def __init__(self, progress: RunProgress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        try:
            if isinstance(args, tuple) and args and isinstance(args[-1], dict):
                if EPOCH_KEYS <= args[-1].keys():
                    self.progress.epoch(args[-1])
        except Exception:  # a display problem never stops the training (logging's contract)
            self.handleError(record)


@contextmanager
def _epoch_lines(progress: RunProgress) -> Iterator[None]:
    """While open, the training loop's epoch records go to ``progress`` (and not to stderr)."""
    logger = logging.getLogger(EPOCH_LOGGER)
    handler, saved = _EpochHandler(progress), (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@dataclass
class Pipeline:
    """The code location and the persistent instance one command runs its jobs on, with the
    command's ``settings`` (its options applied) as the runs' resources."""

    settings: Settings
    instance: dg.DagsterInstance
    definitions: dg.Definitions
    command: str

    def run(
        self,
        job_name: str,
        *,
        label: str,
        steps: Collection[str],
        partition: str | None = None,
        only: Collection[str] | None = None,
    ) -> tuple[dg.ExecuteInProcessResult, RunProgress]:
        """Run ``job_name`` (for ``partition``; only the assets ``only`` when given, with their
        checks) in process on the instance, printing progress; ``RunFailed`` unless it
        succeeded. Returns the result and the progress (epoch records)."""
        job = self.definitions.resolve_job_def(job_name)
        run_id = str(uuid.uuid4())
        progress = RunProgress(label, partition, steps, self.settings.models.epochs)
        self.instance.add_event_listener(run_id, progress)
        with _epoch_lines(progress):
            result = job.execute_in_process(
                run_config=QUIET_RUN_CONFIG,
                instance=self.instance,
                partition_key=partition,
                raise_on_error=False,
                asset_selection=[dg.AssetKey(a) for a in only] if only else None,
                run_id=run_id,
                tags={COMMAND_TAG: self.command},
            )
        if not result.success:
            what = f"{job_name}[{partition}]" if partition else job_name
            why = progress.failure or "see the run in the Dagster UI (make dev)"
            raise RunFailed(f"{what} failed: {why} (Dagster run {run_id})")
        return result, progress


def with_settings(definitions: dg.Definitions, settings: Settings) -> dg.Definitions:
    """``definitions`` with its resources built from ``settings`` (the environment plus the
    command's options) rather than from the environment alone; everything else kept."""
    from levibot_pipelines.defs.resources import build_resources

    params = inspect.signature(dg.Definitions).parameters
    fields = {name: getattr(definitions, name) for name in params}
    fields["resources"] = {**(definitions.resources or {}), **build_resources(settings)}
    return dg.Definitions(**fields)


@contextmanager
def open_pipeline(settings: Settings, command: str) -> Iterator[Pipeline]:
    """A :class:`Pipeline` over the code location (with ``settings`` as its resources) and
    the instance under the home; ``command`` tags every run (``levibot/command``)."""
    from levibot_pipelines.definitions import load_definitions

    definitions = with_settings(load_definitions(), settings)
    with open_instance(settings) as instance:
        yield Pipeline(settings, instance, definitions, command)


def asset_metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    """The metadata values of ``asset``'s materialization in ``result`` (empty when none)."""
    materializations = result.asset_materializations_for_node(asset)
    if not materializations:
        return {}
    return {k: v.value for k, v in materializations[-1].metadata.items()}


# --- ingest, train, smoke (the seed's ingest_multi.py, train_deep_tfm.py, smoke_test.sh) ---------


def ingest_all(pipeline: Pipeline) -> None:
    """``ingest_job`` once per configured symbol (one run per partition, as the schedule
    does), then ``features_job`` once. A symbol whose run fails does not stop the others;
    the feature table is then not rebuilt and ``RunFailed`` names every failure."""
    failed = []
    for symbol in pipeline.settings.market.symbols:
        try:
            pipeline.run("ingest_job", label="ingest", steps=("ohlcv",), partition=symbol)
        except RunFailed as exc:
            failed.append(str(exc))
    if failed:
        raise RunFailed("; ".join(failed) + "; the feature table was not rebuilt")
    pipeline.run("features_job", label="features", steps=("cross_asset_features",))


def feature_table_lines(settings: Settings) -> list[str]:
    """Where the feature table is, its shape and its symbols."""
    table = summaries.feature_table(data_store(settings))
    if table is None:
        return [f"feature table: not built yet under {data_root(settings).url}"]
    counts = set(table.rows_per_symbol.values())
    each = (
        f"{counts.pop():,} rows each"
        if len(counts) == 1
        else ", ".join(f"{s} {n:,}" for s, n in table.rows_per_symbol.items())
    )
    return [
        f"feature table: {table.path}",
        f"  DuckDB view cross_asset_features in {warehouse_path(settings.home)}",
        f"shape: {table.rows:,} rows x {table.columns} columns",
        f"symbols: {', '.join(table.symbols)} ({each})",
        f"bars: {utc_text(table.first_bar)} .. {utc_text(table.last_bar)} "
        f"({settings.market.timeframe}, bar open times)",
    ]


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    if settings.market.source == "synthetic":
        print(NOT_MARKET_DATA)
    with open_pipeline(settings, args.command_line) as pipeline:
        ingest_all(pipeline)
    print("\n".join(feature_table_lines(settings)))
    return 0


def train_symbols(raw: str | None, settings: Settings) -> list[str]:
    """``--symbol`` in any spelling (``BTCUSDT``, ``BTC/USDT``, ``btc-usdt``) as configured
    symbols; every configured symbol when None. ``ValueError`` naming it and the known ones."""
    from levibot_pipelines.api import normalize_symbol

    known = settings.market.symbols
    if raw is None:
        return list(known)
    symbol = normalize_symbol(raw)
    if symbol not in known:
        raise ValueError(
            f"--symbol {raw!r} is not a configured symbol; known symbols: {', '.join(known)} "
            "(LEVIBOT_SYMBOLS; BTC/USDT spellings are accepted)"
        )
    return [symbol]


def require_features(settings: Settings, symbols: list[str]) -> None:
    """``ValueError`` telling to run ``levibot ingest`` when ``symbols`` have no feature rows."""
    store = data_store(settings)
    have = summaries.symbols_with_features(store)
    if not have:
        raise ValueError(f"no feature table at {store.features_path}: run `levibot ingest` first")
    missing = [s for s in symbols if s not in have]
    if missing:
        raise ValueError(
            f"no feature rows for {', '.join(missing)} in {store.features_path}: "
            "run `levibot ingest` first"
        )


def train_symbol(pipeline: Pipeline, symbol: str, report: bool = False) -> list[str]:
    """``training_job`` for ``symbol`` (``TRAIN_ASSETS``, plus ``model_report`` when
    ``report``); the summary lines: epochs, best epoch, the saved version, the champion."""
    assets = (*TRAIN_ASSETS, REPORT_ASSET) if report else TRAIN_ASSETS
    result, progress = pipeline.run(
        "training_job", label="train", steps=assets, partition=symbol, only=assets
    )
    return training_lines(pipeline.settings, symbol, progress.epochs, result)


def training_lines(
    settings: Settings, symbol: str, epochs: list[dict], result: dg.ExecuteInProcessResult
) -> list[str]:
    """What ``levibot train`` prints per symbol once its run succeeded."""
    nan = float("nan")
    deep = asset_metadata(result, DEEP_ASSET)
    w_lgbm = asset_metadata(result, "ensemble_weights").get("w_lgbm", nan)
    best = summaries.best_epoch(epochs)
    from levibot_pipelines.adapters.tracking import is_tracking_server

    home = settings.home
    uri = mlflow_tracking_uri(home, settings.models.mlflow_tracking_uri)
    store = redact_url(uri)
    files = "stored by the server" if is_tracking_server(uri) else f"under {mlartifacts_dir(home)}"
    ran = len(epochs)
    stopped = "" if ran == settings.models.epochs else " (early stopping on the validation loss)"
    return [
        f"{symbol}: Transformer trained {ran} of {settings.models.epochs} epoch(s){stopped}",
        f"{symbol}: best epoch {best['epoch']} (val_loss {best['val_loss']:.4f}, val_acc "
        f"{best['val_acc']:.4f}): its weights are the ones saved",
        f"{symbol}: saved as {model_name('deep', symbol)} version {deep.get('model_version')} "
        f"in the MLflow registry {store} (files {files})",
        f"{symbol}: champion: {deep.get('champion_decision')}; test window log loss "
        f"{deep.get('test_log_loss', nan):.4f}, AUC {deep.get('test_auc', nan):.4f}",
        f"{symbol}: ensemble weight w_lgbm {w_lgbm:.2f} ({ensemble_weights_path(home, symbol)})",
        f"{symbol}: decision policy: "
        f"{asset_metadata(result, 'ensemble_weights').get('decision', 'not chosen')}",
    ]


def resolved_profile(settings: Settings) -> str:
    """The Transformer profile the training runs with on this machine: ``LEVIBOT_PROFILE``, or
    for ``auto`` what it resolves to, e.g. ``"small (auto)"`` (the measurements it needs are
    kept in the home, so the training steps decide the same)."""
    if settings.models.profile != "auto":
        return settings.models.profile
    from levibot_pipelines.defs.resources import ModelResource

    return f"{ModelResource(settings).eval_config()[0]} (auto)"


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    symbols = train_symbols(args.symbol, settings)
    require_features(settings, symbols)
    print(
        f"training {', '.join(symbols)}: profile {resolved_profile(settings)}, at most "
        f"{settings.models.epochs} epoch(s)"
        + (", with the walk-forward model_report" if args.report else "")
    )
    lines = []
    with open_pipeline(settings, args.command_line) as pipeline:
        for symbol in symbols:
            lines += train_symbol(pipeline, symbol, report=args.report)
    print("\n".join(lines))
    return 0


@contextmanager
def api_server(settings: Settings, start_timeout_s: float = 30.0) -> Iterator[str | None]:
    """The real API (``api.create_app``) served by uvicorn in a thread on a free loopback
    port; yields its base URL (None when it did not start within ``start_timeout_s``)."""
    import uvicorn

    from levibot_pipelines.api import create_app

    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="levibot-smoke-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            yield None
            return
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _print_steps(steps: list[smoke.Step]) -> None:
    for step in steps:
        print(f"[smoke] {step.name}: {'PASS' if step.passed else 'FAIL'} - {step.detail}")


def smoke_prepare(pipeline: Pipeline, tracker: Tracker) -> list[smoke.Step]:
    """Train the symbols without models (publishing needs every configured symbol) and
    publish when the published predictions are not current; a FAIL step per failed run."""
    from levibot_pipelines.usecases.publish_state import missing_models

    s = pipeline.settings
    try:
        for symbol in missing_models(s.home, s.market.symbols):
            print(
                f"[smoke] {symbol} has no trained models: training it (publishing needs every "
                "configured symbol)",
                flush=True,
            )
            train_symbol(pipeline, symbol)
        reason = smoke.publish_reason(s.home, tracker, s.market.symbols, data_root(s))
        if reason is not None:
            print(f"[smoke] publishing the latest predictions: {reason}", flush=True)
            pipeline.run("publish_job", label="publish", steps=("latest_predictions",))
    except RunFailed as exc:
        return [smoke.Step("prepare", False, str(exc))]
    return []


def cmd_smoke(args: argparse.Namespace, settings: Settings) -> int:
    from levibot_pipelines.defs.resources import ModelResource

    symbols = settings.market.symbols
    tracker = ModelResource(settings).tracker()
    table = summaries.feature_table(data_store(settings))
    have = table.symbols if table is not None else []
    missing = [s for s in symbols if s not in have]
    steps = [
        smoke.Step(
            "feature table",
            not missing,
            f"no rows for {', '.join(missing)}: run levibot ingest"
            if missing
            else f"{table.rows:,} rows x {table.columns} columns, newest bar "
            f"{utc_text(table.last_bar)}",
        )
    ]
    _print_steps(steps)
    if not missing and not args.check_only:
        with open_pipeline(settings, args.command_line) as pipeline:
            prepared = smoke_prepare(pipeline, tracker)
        _print_steps(prepared)
        steps += prepared
    checks = smoke.model_steps(tracker, symbols)
    reason = (
        smoke.publish_reason(settings.home, tracker, symbols, data_root(settings))
        if not missing
        else "no features"
    )
    checks.append(smoke.Step("predictions published", reason is None, reason or "current"))
    with api_server(settings) as base_url:
        if base_url is None:
            checks.append(smoke.Step("API started", False, "uvicorn did not start in 30 s"))
        else:
            checks.append(smoke.Step("API started", True, base_url))
            checks += smoke.api_steps(base_url, symbols, settings.serving.api_token)
    _print_steps(checks)
    failed = [step.name for step in steps + checks if not step.passed]
    if failed:
        print(f"SMOKE TEST FAILED: {', '.join(failed)}")
        return 1
    print("SMOKE TEST PASSED")
    return 0


# --- demo and status -------------------------------------------------------------------------


def status_table(settings: Settings, now_ms: int) -> pl.DataFrame:
    """Per symbol: stored bars, newest bar and data-time staleness; plus the feature table."""
    store = data_store(settings)
    return status.data_status(store, settings.market.symbols, settings.market.timeframe_ms, now_ms)


def _run_demo_jobs(pipeline: Pipeline) -> tuple[float, float]:
    """Ingest, features, training (with the report) and publish; (data s, total s)."""
    from levibot_pipelines.defs.models import MODEL_ASSETS

    started = time.perf_counter()
    ingest_all(pipeline)
    data_s = time.perf_counter() - started
    for symbol in pipeline.settings.market.symbols:
        pipeline.run("training_job", label="train", steps=MODEL_ASSETS, partition=symbol)
    pipeline.run("publish_job", label="publish", steps=("latest_predictions",))
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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    with open_pipeline(settings, args.command_line) as pipeline:
        data_s, elapsed = _run_demo_jobs(pipeline)
    m = settings.models
    print(
        f"\nlevibot demo: source={settings.market.source}, home={settings.home} "
        f"(data {data_s:.1f} s, total {elapsed:.1f} s; profile {resolved_profile(settings)}, "
        f"{m.report_folds} report fold(s), {m.mc_samples} MC samples)"
    )
    if settings.market.source == "synthetic":
        print(NOT_MARKET_DATA)
    print_demo_tables(settings, int(time.time() * 1000))
    base = f"http://{settings.serving.api_host}:{settings.serving.api_port}"
    print(
        "\nNext:\n"
        f"  make dev                 Dagster UI at http://127.0.0.1:3000 on this same instance "
        f"({dagster_dir(settings.home)})\n"
        f"  .venv/bin/levibot serve  the read-only API at {base} (docs at {base}/docs), e.g.\n"
        f"    curl '{base}/ml/predict_ensemble?symbol=BTCUSDT'\n"
        f"    curl {base}/metrics/prom\n"
        "  .venv/bin/levibot smoke  models trained, calibration complete, API responding\n"
        "  .venv/bin/levibot kill-switch status"
    )
    return 0


def backtest_summary(settings: Settings) -> str:
    """Per symbol: the policy backtest of the walk-forward predictions, net of costs."""
    table = status.backtest_table(data_root(settings), settings.market.symbols)
    if table is None:
        return "\npolicy backtest: no report yet"
    costs = f"{settings.trading.fee_bps:g} bps fees + slippage per side"
    verdicts = status.decision_verdicts(data_root(settings), settings.market.symbols)
    lines = "".join(f"\n  {symbol}: {v}" for symbol, v in verdicts.items())
    decision = f"\ndecision engine (flat unless a validated edge clears the round trip):{lines}"
    return f"\npolicy backtest on the walk-forward test bars (net of {costs}):\n{table}" + (
        decision if verdicts else ""
    )


def predictions_summary(settings: Settings) -> str:
    """The published latest predictions, one row per symbol."""
    published = status.published_status(data_root(settings))
    if published is None:
        return "\nlatest predictions: nothing published yet"
    tail = "".join(f"\n  {sym}: {why}" for sym, why in published.decision_reasons.items())
    tail += "".join(f"\n  kill-switch: {r}" for r in published.kill_switch_reasons)
    return f"\nlatest predictions ({published.path}):\n{published.table}{tail}"


def _weights(values: tuple[float, ...]) -> str:
    return ", ".join(f"{w:.2f}" for w in values) if values else "not recorded"


def model_summary(settings: Settings) -> str:
    """Per symbol: champion versions, the two ensemble weights (the champions' published one
    and the report folds' own) and the walk-forward test metrics."""
    store = mlflow_tracking_uri(settings.home, settings.models.mlflow_tracking_uri)
    lines = [f"\nmodels (walk-forward test windows; MLflow store {redact_url(store)}):"]
    models = status.model_status(settings.home, settings.market.symbols, data_root(settings))
    for symbol, m in models.items():
        if m is None:
            lines.append(f"{symbol}: no report yet")
            continue
        folds = len(m.report_w_lgbm)
        ensemble_json = ensemble_weights_path(settings.home, symbol).relative_to(settings.home)
        lines += [
            f"{symbol}: {m.n_test} test bars in {m.folds} fold(s); champions "
            f"lgbm v{m.lgbm_version}, deep v{m.deep_version}",
            "  w_lgbm, the LightGBM share of the ensemble (each bar then reweighted by "
            "confidence):",
            f"    {m.w_lgbm:.2f} published: the champions' ensemble ({ensemble_json})",
            f"    {_weights(m.report_w_lgbm)} in the table's `ensemble` row: fitted in "
            + (f"each of the report's {folds} folds" if folds > 1 else "the report's fold"),
            str(m.metrics),
        ]
    return "\n".join(lines)


# --- evaluate, serve, status, kill-switch --------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
    from levibot_pipelines.usecases.evaluate import eval_config, feature_columns, run_evaluate

    # Files are replayed whole unless told otherwise; other sources start at LEVIBOT_START.
    start = args.start or ("2000-01-01" if args.source == "files" else None)
    if args.edge is not None and args.source != "synthetic":
        raise SettingsError(
            f"--edge={args.edge!r} plants an edge in the synthetic market: it needs "
            f"--source synthetic, got --source {args.source}"
        )
    if args.futures_dir is not None and args.source != "files":
        raise SettingsError(
            f"--futures-dir={args.futures_dir!r} joins recorded futures data onto recorded "
            f"candles: it needs --source files, got --source {args.source}"
        )
    if args.edge is not None:
        from levibot_pipelines.core.data.synthetic import PlantedEdge

        try:
            PlantedEdge.parse(args.edge)
        except ValueError as exc:
            raise SettingsError(f"--{exc}") from None  # "--edge '80': expected BPS@HORIZON ..."
    given = {
        "LEVIBOT_SOURCE": args.source,
        "LEVIBOT_SYNTHETIC_EDGE": args.edge,
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
    test_from_ms = _date_ms("--test-from", args.test_from) if args.test_from else None
    profile, cfg = eval_config(
        args.profile,
        # From a date: fold 0 trains on everything before it (an expanding train part).
        walk=WalkForwardConfig(
            train=train,
            val=val,
            calib=calib,
            test=test,
            purge=purge,
            expanding=test_from_ms is not None,
        ),
        test_from_ms=test_from_ms,
        epochs=args.epochs,
        mc_samples=args.mc_samples,
        max_train_samples=args.max_train_samples,
        seed=args.seed,
        horizon=settings.models.label_horizon,
        n_features=len(feature_columns(args.futures_dir is not None)),
        precision=settings.models.precision,  # probed here, kept nowhere: the home is untouched
    )
    futures_dir = None if args.futures_dir is None else Path(args.futures_dir)
    report = run_evaluate(
        settings, Path(args.out), cfg, profile, progress=_progress, futures_dir=futures_dir
    )
    for symbol, rep in report["symbols"].items():
        models = rep["models"]
        print(
            f"{symbol}: n_test={rep['n_test']} folds={rep['folds']} "
            + " ".join(
                f"{m}:auc={models[m]['auc']:.3f},bss={models[m]['bss']:+.4f}" for m in models
            )
        )
        if "decision" in rep:
            print(f"{symbol}: {rep['decision']['verdict']}")
    return 0


def _date_ms(flag: str, raw: str) -> int:
    """An ISO date or date-time (UTC) as ms UTC, or a ``SettingsError`` naming ``flag``."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{flag}={raw!r}: expected an ISO date such as 2025-06-01") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


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


# --- the argument parser -----------------------------------------------------------------------


class DefaultsHelp(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its
    default (options whose default depends on a setting say so in words)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.required or not action.option_strings:
            return text
        if action.default is None or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _subparser(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=DefaultsHelp, **kwargs)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    summary = "purged walk-forward of LightGBM, Transformer, ensemble and baselines on your candles"
    ev = _subparser(
        sub,
        "evaluate",
        help=summary,
        description=f"{summary}. The budget options below are this command's own (a cheaper "
        "run than production), separate from the LEVIBOT_* settings the pipeline trains with.",
    )
    ev.add_argument(
        "--source", choices=["files", "synthetic", "ccxt"], default="files", help="candle source"
    )
    ev.add_argument(
        "--files-dir",
        help="directory of {SYMBOL}-15m.parquet/.csv candle files (default: LEVIBOT_FILES_DIR)",
    )
    ev.add_argument("--symbols", help="comma-separated (default: LEVIBOT_SYMBOLS)")
    ev.add_argument(
        "--edge",
        metavar="BPS@HORIZON",
        help="with --source synthetic only: plant a known edge, a reversal of BPS in total over "
        "the HORIZON bars after every large bar (a positive control for the decision engine; "
        "default: LEVIBOT_SYNTHETIC_EDGE, unset: none)",
    )
    ev.add_argument(
        "--futures-dir",
        metavar="DIR",
        help="with --source files only (research): also train both models on the perpetual-"
        "futures features (funding rate, change, z-score, extreme flag; basis) from "
        "DIR/{SYMBOL}-funding-8h.parquet and DIR/{SYMBOL}-mark-1h.parquet of every symbol "
        "(default: none, the 10 candle features only)",
    )
    ev.add_argument(
        "--start",
        help="ISO date where history starts (default: all of it with --source files, "
        "else LEVIBOT_START)",
    )
    ev.add_argument(
        "--profile", default="auto", help="auto (seed on CUDA, small on CPU), small, seed"
    )
    ev.add_argument(
        "--out", required=True, help="output directory for report.json/.md and plots (required)"
    )
    ev.add_argument(
        "--walk",
        help="TRAIN,VAL,CALIB,TEST bars per fold (default: "
        + ",".join(str(v) for v in EVALUATE_WALK)
        + ")",
    )
    ev.add_argument(
        "--test-from",
        metavar="DATE",
        help="ISO date (UTC) where the first test part starts: each fold trains on everything "
        "before its validation part (expanding), and only bars from DATE on are scored "
        "(default: folds laid out from the start of the history)",
    )
    budget = ev.add_argument_group(
        "evaluate budget", "levibot evaluate's own defaults, not read from LEVIBOT_* settings"
    )
    for flag, default, text in EVALUATE_BUDGET:
        budget.add_argument(flag, type=int, default=default, help=f"{text} (default %(default)s)")


def _add_kill_switch_parser(sub: argparse._SubParsersAction) -> None:
    ks = _subparser(
        sub, "kill-switch", help="show, engage or release the trading kill-switch (LEVIBOT_HOME)"
    )
    actions = ks.add_subparsers(dest="action", required=True)
    st = _subparser(actions, "status", help="effective state, entries and size multiplier")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    en = _subparser(actions, "engage", help="engage the manual entry (REDUCING or HALTED)")
    en.add_argument(
        "--state", choices=["REDUCING", "HALTED"], default="HALTED", help="the state to engage"
    )
    en.add_argument("--reason", required=True, help="why (recorded and published; required)")
    en.add_argument("--by", default=None, help="who (default: the OS user)")
    rel = _subparser(actions, "release", help="clear the manual entry")
    rel.add_argument("--reason", default="", help="why (recorded in the history; default: none)")
    rel.add_argument("--by", default=None, help="who (default: the OS user)")
    rel.add_argument(
        "--all",
        action="store_true",
        help="also clear automatic triggers (they re-engage if their condition still holds)",
    )


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected an integer >= 1")
    return value


def _add_pipeline_parsers(sub: argparse._SubParsersAction) -> None:
    """``demo``, ``ingest``, ``train`` and ``smoke``: runs through Dagster."""
    demo = ", ".join(f"{k}={v}" for k, v in DEMO_DEFAULTS.items())
    _subparser(
        sub,
        "demo",
        help="ingest, build features, train, backtest and publish offline (LEVIBOT_SOURCE)",
        description="Ingest, build features, train and evaluate every symbol, publish the "
        f"latest predictions, print a summary. The demo's own defaults: {demo} (a LEVIBOT_* "
        "variable that is set wins); `make demo` runs exactly this.",
    )
    _subparser(
        sub,
        "ingest",
        help="ingest every configured symbol and rebuild the cross-asset feature table",
        description="The seed's `python ingest_multi.py`: one ingest_job run per symbol "
        "(LEVIBOT_SYMBOLS, from LEVIBOT_SOURCE), then features_job; prints the feature "
        "table's path, shape and symbols.",
    )
    tr = _subparser(
        sub,
        "train",
        help="train a symbol's models (LightGBM, Transformer, ensemble weight)",
        description="The seed's `python train_deep_tfm.py --symbol BTCUSDT --epochs 30`: "
        "training_job for the symbol's partition (lgbm_model, deep_tfm_model, "
        "ensemble_weights; --report adds model_report). Prints each Transformer epoch's "
        "training loss and validation accuracy, the best epoch, and the saved model version. "
        "Needs the feature table (`levibot ingest`).",
    )
    tr.add_argument(
        "--symbol",
        help="BTCUSDT, BTC/USDT or btcusdt (default: every configured symbol, LEVIBOT_SYMBOLS)",
    )
    tr.add_argument(
        "--epochs",
        type=_positive_int,
        help="Transformer epochs at most; training stops early when the validation loss stops "
        f"improving (default: LEVIBOT_EPOCHS, {ModelSettings.epochs} when unset)",
    )
    tr.add_argument(
        "--report",
        action="store_true",
        help="also run model_report: the purged walk-forward evaluation and policy backtest "
        "(slower: it trains both models once per fold)",
    )
    sm = _subparser(
        sub,
        "smoke",
        help="check models trained, calibration complete and the API responding",
        description="The seed's `bash smoke_test.sh`. It never ingests; it trains the symbols "
        "that have no models "
        "and publishes when the published predictions are not current (through Dagster; "
        "--check-only runs nothing), then checks every symbol's champions and calibrators, "
        "starts the API on a free loopback port and requests /healthz and /ml/predict_deep. "
        "Prints PASS/FAIL per step, then SMOKE TEST PASSED (exit 0) or SMOKE TEST FAILED "
        "(exit 1).",
    )
    sm.add_argument(
        "--check-only",
        action="store_true",
        help="run no pipeline step: a missing model or publish is a FAIL",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``levibot`` argument parser: one subcommand per ``cmd_*`` function."""
    parser = argparse.ArgumentParser(
        prog="levibot",
        description="ingest, train, smoke and demo run the pipeline through Dagster on the "
        "instance under $LEVIBOT_HOME/dagster (the one `make dev` opens), printing a line per "
        "step; `levibot COMMAND --help` shows each option with its default.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_pipeline_parsers(sub)
    _subparser(sub, "status", help="per-asset row counts, newest bar and data-time staleness")
    _add_evaluate_parser(sub)
    _add_kill_switch_parser(sub)
    serve = _subparser(sub, "serve", help="the read-only HTTP API over the published predictions")
    serve.add_argument("--host", default=None, help="default LEVIBOT_API_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="default LEVIBOT_API_PORT (8000)")
    return parser


def command_settings(args: argparse.Namespace) -> Settings:
    """The settings a command runs with: the environment, plus ``levibot demo``'s own
    defaults (``DEMO_DEFAULTS``) or ``levibot train --epochs``."""
    if args.command == "demo":
        return Settings.from_env(defaults=DEMO_DEFAULTS)
    if args.command == "train" and args.epochs is not None:
        return Settings.from_env(overrides={"LEVIBOT_EPOCHS": str(args.epochs)})
    return Settings.from_env()


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


PIPELINE_COMMANDS = {"demo": cmd_demo, "ingest": cmd_ingest, "train": cmd_train, "smoke": cmd_smoke}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["levibot", *argv])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "evaluate":
            return cmd_evaluate(args)
        settings = command_settings(args)
        if args.command in PIPELINE_COMMANDS:
            return PIPELINE_COMMANDS[args.command](args, settings)
        if args.command == "kill-switch":
            return cmd_kill_switch(args, settings)
        if args.command == "serve":
            return cmd_serve(args, settings)
        return cmd_status(settings)
    except RunFailed as exc:
        print(f"levibot: {exc}", file=sys.stderr)
        return 1
    except (SettingsError, ValueError) as exc:
        print(f"levibot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"levibot: {_os_error_text(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
