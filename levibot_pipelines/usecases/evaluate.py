"""`levibot evaluate`: the whole walk-forward on a user's candles, in a temporary home."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from levibot_pipelines.adapters.reports import write_report
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.features import build_features
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, evaluate_symbol, symbol_data
from levibot_pipelines.core.models.transformer import resolve_profile
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol, make_source
from levibot_pipelines.usecases.report import backtest_symbol, decide_symbol

log = logging.getLogger(__name__)


def run_evaluate(
    settings: Settings, out: Path, cfg: EvalConfig, profile: str, progress=None
) -> dict:
    """Ingest ``settings.market.symbols`` from ``settings.market.source`` into a temporary home,
    build the features, run the walk-forward per symbol and write the report under ``out``."""
    say = progress or log.info
    started = time.perf_counter()
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
        features = build_features(bars, tf_ms=local.market.timeframe_ms, horizon=cfg.horizon)
    say(f"features: {features.height} rows")
    evaluations, backtests, decisions = [], {}, {}
    for symbol in settings.market.symbols:
        ev = evaluate_symbol(
            symbol_data(features, symbol), cfg, tf_ms=settings.market.timeframe_ms, progress=say
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
        "torch_threads": torch.get_num_threads(),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    report = write_report(out, evaluations, meta, backtests, decisions)
    say(f"wrote {out / 'report.json'} and {out / 'report.md'} in {meta['wall_s']:.0f} s")
    return report


def eval_config(profile: str, **overrides) -> tuple[str, EvalConfig]:
    name, transformer = resolve_profile(profile, torch.cuda.is_available())
    return name, EvalConfig(transformer=transformer, **overrides)
