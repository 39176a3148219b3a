"""`levibot evaluate`: the whole walk-forward on a user's candles, in a temporary home.

With ``futures_dir`` (``levibot evaluate --futures-dir``, a research option) both models also
take the perpetual-futures features (``core.data.futures.FUTURES_COLUMNS``) of every bar, from
the funding and mark files of every symbol in that directory
(``adapters.futures_sources.FuturesFilesSource``). The production assets are unchanged.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import torch

from levibot_pipelines.adapters.futures_sources import FuturesFilesSource, load_futures
from levibot_pipelines.adapters.hardware import resolve_precision, seed_rates
from levibot_pipelines.adapters.reports import write_report
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.features import FEATURE_COLUMNS, build_features
from levibot_pipelines.core.data.futures import FUTURES_COLUMNS, FuturesData
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, evaluate_symbol, symbol_data
from levibot_pipelines.core.models.profile_choice import (
    Throughput,
    choose_cpu_profile,
    estimated_seconds,
    training_work,
)
from levibot_pipelines.core.models.transformer import PROFILES, resolve_profile
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol, make_source
from levibot_pipelines.usecases.report import backtest_symbol, decide_symbol

log = logging.getLogger(__name__)


def feature_columns(with_futures: bool) -> tuple[str, ...]:
    """The columns both models are trained on: ``FEATURE_COLUMNS`` (10), plus
    ``FUTURES_COLUMNS`` (5 more) with futures data."""
    return FEATURE_COLUMNS + FUTURES_COLUMNS if with_futures else FEATURE_COLUMNS


def load_futures_files(directory: Path, symbols: tuple[str, ...], *, now_ms: int) -> FuturesData:
    """Every funding settlement and complete mark bar (up to ``now_ms``) of ``symbols`` in
    ``directory``; ``ValueError`` naming the file when one is missing or unreadable, or has a
    bad column or value (``adapters.futures_sources.check_funding`` / ``check_mark``)."""
    source = FuturesFilesSource(directory)
    missing = source.missing_files(symbols)
    if missing:
        raise ValueError(
            f"--futures-dir: {missing[0]} does not exist (needed: "
            f"{source.FUNDING_FILE} and {source.MARK_FILE} for every symbol; missing "
            f"{len(missing)} file(s))"
        )
    return load_futures(source, list(symbols), since_ms=0, now_ms=now_ms)


def _ingest_features(
    settings: Settings, cfg: EvalConfig, futures: FuturesData | None, say
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ingest ``settings.market.symbols`` into a temporary home; the bars and the feature
    table (with ``FUTURES_COLUMNS`` when ``futures`` is given)."""
    with tempfile.TemporaryDirectory(prefix="levibot-evaluate-") as tmp:
        local = replace(settings, home=Path(tmp))
        store = ParquetStore(local.home)
        source = make_source(local.market)
        now_ms = int(time.time() * 1000)
        for symbol in local.market.symbols:
            rep = ingest_symbol(
                source,
                store,
                symbol,
                start_ms=local.market.start_ms,
                now_ms=now_ms,
                tf_ms=local.market.timeframe_ms,
            )
            say(
                f"{symbol}: {rep.total_rows} bars ingested ({rep.n_rejected} rejected, "
                f"{rep.gaps} gaps)"
            )
        bars = store.read_all_ohlcv(local.market.symbols)
    features = build_features(
        bars, tf_ms=settings.market.timeframe_ms, horizon=cfg.horizon, futures=futures
    )
    return bars, features


def run_evaluate(
    settings: Settings,
    out: Path,
    cfg: EvalConfig,
    profile: str,
    progress=None,
    futures_dir: Path | None = None,
) -> dict:
    """Ingest ``settings.market.symbols`` from ``settings.market.source`` into a temporary home,
    build the features, run the walk-forward per symbol and write the report under ``out``.

    ``futures_dir``: a directory of ``{SYMBOL}-funding-8h.parquet`` and
    ``{SYMBOL}-mark-1h.parquet`` (None, the default: no futures features). Its files are
    loaded first (a missing or bad file fails before any work) and both models take
    ``feature_columns(True)``; ``cfg.transformer.n_features`` must match the column count
    (``eval_config(..., n_features=...)``), else ``ValueError``."""
    say = progress or log.info
    started = time.perf_counter()
    columns = feature_columns(futures_dir is not None)
    if cfg.transformer.n_features != len(columns):
        raise ValueError(
            f"cfg.transformer.n_features={cfg.transformer.n_features}, but the models take "
            f"{len(columns)} feature columns {list(columns)}"
        )
    futures = None
    if futures_dir is not None:
        now_ms = int(time.time() * 1000)
        futures = load_futures_files(Path(futures_dir), settings.market.symbols, now_ms=now_ms)
        n_funding, n_mark = futures.funding.height, futures.mark.height
        say(f"futures: {n_funding} funding settlements, {n_mark} mark bars")
    bars, features = _ingest_features(settings, cfg, futures, say)
    say(f"features: {features.height} rows, {len(columns)} columns per model")
    evaluations, backtests, decisions = [], {}, {}
    for symbol in settings.market.symbols:
        ev = evaluate_symbol(
            symbol_data(features, symbol, columns),
            cfg,
            tf_ms=settings.market.timeframe_ms,
            progress=say,
        )
        evaluations.append(ev)
        backtests[symbol] = backtest_symbol(settings, symbol, ev.predictions, bars, features)
        decisions[symbol] = decide_symbol(settings, symbol, ev, bars).report
        say(f"{symbol}: decision engine: {decisions[symbol]['verdict']}")
        bt = backtests[symbol].report
        say(
            f"{symbol}: policy backtest net Sharpe {bt['sharpe']:.2f} ({bt['n_trades']} trades, "
            f"costs {bt['costs_paid']:.2%}); buy and hold {bt['buy_and_hold']['sharpe']:.2f}"
        )
    meta = {
        "source": settings.market.source,
        "symbols": list(settings.market.symbols),
        "profile": profile,
        "config": cfg.to_dict(),
        "futures_dir": None if futures_dir is None else str(futures_dir),
        "torch_threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    report = write_report(out, evaluations, meta, backtests, decisions)
    say(f"wrote {out / 'report.json'} and {out / 'report.md'} in {meta['wall_s']:.0f} s")
    return report


@dataclass(frozen=True)
class TrainingBudget:
    """What ``LEVIBOT_PROFILE=auto`` weighs on a CPU: the Transformer part of a job may take
    ``seconds`` with the seed profile, for ``fits`` Transformer fits of the configuration
    (``core.models.profile_choice``)."""

    seconds: float
    fits: int


def pipeline_budget(symbols: int, report_folds: int, minutes: float) -> TrainingBudget:
    """The scheduled training of ``symbols`` symbols within ``minutes``
    (``LEVIBOT_TRAIN_BUDGET_MIN``): per symbol the model (1 fit), ``model_report``'s folds
    (``LEVIBOT_REPORT_FOLDS`` fits) and the MC passes of the ensemble weights and the champion
    comparison (counted as 1 more fit: an upper bound, their MC rows are a fit's)."""
    return TrainingBudget(seconds=60.0 * minutes, fits=symbols * (2 + report_folds))


def eval_config(
    profile: str,
    *,
    n_features: int = len(FEATURE_COLUMNS),
    precision: str = "fp32",
    budget: TrainingBudget | None = None,
    home: Path | str | None = None,
    **overrides,
) -> tuple[str, EvalConfig]:
    """The profile's name and an ``EvalConfig`` of its Transformer with ``n_features`` inputs
    (default 10, ``FEATURE_COLUMNS``; ``len(feature_columns(True))`` with futures), the
    ``precision`` setting resolved for this machine (``adapters.hardware.resolve_precision``;
    ``LEVIBOT_PRECISION``, default here ``fp32``) and ``overrides`` of the other fields.

    ``profile="auto"``: ``seed`` on CUDA; on a CPU ``seed`` when ``budget`` is given and the
    seed profile's estimated time for it fits (``auto_cpu_profile``), else ``small``.
    Measurements are kept per machine under ``home`` (``adapters.hardware.measured``)."""
    cuda = torch.cuda.is_available()
    resolved = resolve_precision(precision, "cuda" if cuda else "cpu", home)
    cfg = EvalConfig(transformer=PROFILES["small"], precision=resolved, **overrides)
    if profile == "auto" and not cuda and budget is not None:
        profile = auto_cpu_profile(cfg, budget, home)
    name, transformer = resolve_profile(profile, cuda)
    return name, replace(cfg, transformer=replace(transformer, n_features=n_features))


def seed_estimate_s(cfg: EvalConfig, fits: int, speed: Throughput) -> float:
    """Seconds of ``fits`` seed-profile Transformer fits of ``cfg`` (its walk, epochs, windows
    per epoch and MC draws) at ``speed`` (``core.models.profile_choice``)."""
    w = cfg.walk
    work = training_work(
        fits=fits,
        epochs=cfg.epochs,
        train=w.train,
        val=w.val,
        calib=w.calib,
        test=w.test,
        max_train_samples=cfg.max_train_samples,
        mc_samples=cfg.mc_samples,
    )
    return estimated_seconds(work, speed)


def auto_cpu_profile(cfg: EvalConfig, budget: TrainingBudget, home: Path | str | None) -> str:
    """``"seed"`` or ``"small"``: whether ``budget.fits`` seed-profile fits of ``cfg`` fit
    ``budget.seconds`` at this machine's measured seed throughput in ``cfg.precision``
    (``adapters.hardware.seed_rates``); logged with the estimate."""
    speed = seed_rates(cfg.precision, home)
    estimate = seed_estimate_s(cfg, budget.fits, speed)
    chosen = choose_cpu_profile(estimate, budget.seconds)
    log.info(
        "profile auto on this CPU: %s (seed estimated %.0f min for %d fits at %.0f training "
        "windows/s and %.0f MC rows/s in %s; budget %.0f min)",
        chosen,
        estimate / 60,
        budget.fits,
        speed.train_windows_per_s,
        speed.forward_rows_per_s,
        cfg.precision,
        budget.seconds / 60,
    )
    return chosen
