"""Backtest engine benchmark (issue: backtest): one million 15m bars with stops and
take-profits on and thousands of trades must run, metrics included, in <= 2 s wall."""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, Signals, run_backtest
from levibot_pipelines.core.trading.performance import backtest_metrics
from levibot_pipelines.settings import TradingSettings

TARGET_S = 2.0
TF_MS = 900_000


def synthetic_market(n_bars: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Random-walk OHLC: log returns N(0, 0.002) per bar, a small open gap, wicks beyond the
    body. Returns ``(timestamps, open, high, low, close)``, each shape (n_bars,)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n_bars)))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0.0, 0.0002, n_bars))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.001, n_bars)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.001, n_bars)))
    return np.arange(n_bars, dtype=np.int64) * TF_MS, open_, high, low, close


def noisy_momentum_signals(close: np.ndarray, seed: int = 1) -> Signals:
    """Enter with the sign of a noisy 16-bar momentum score when it is strong, exit when it
    flips; stop 1%, take-profit 2%, size 0.5."""
    rng = np.random.default_rng(seed)
    n = close.size
    log_c = np.log(close)
    mom = np.r_[np.zeros(16), log_c[16:] - log_c[:-16]]
    score = mom / 0.008 + rng.normal(0.0, 1.0, n)
    entry = np.where(score > 2.5, 1, np.where(score < -2.5, -1, 0)).astype(np.int8)
    return Signals(
        entry_side=entry,
        size=np.full(n, 0.5),
        stop_pct=np.full(n, 0.01),
        take_profit_pct=np.full(n, 0.02),
        exit_long=score < -0.5,
        exit_short=score > 0.5,
    )


def bench_backtest(n_bars: int = 1_000_000, repeats: int = 3) -> dict:
    """Wall time of ``run_backtest`` + ``backtest_metrics`` on ``n_bars`` synthetic bars."""
    prices = synthetic_market(n_bars)
    signals = noisy_momentum_signals(prices[4])
    costs = TradingSettings()  # the default LEVIBOT_FEE_BPS / LEVIBOT_SLIPPAGE_BPS
    cfg = BacktestConfig(CostModel(costs.fee_bps, costs.default_slippage_bps))
    runs, n_trades = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run_backtest(*prices, signals, cfg)
        backtest_metrics(result, cfg)
        runs.append(time.perf_counter() - t0)
        n_trades = result.trades.height
    median = statistics.median(runs)
    return {
        "n_bars": n_bars,
        "n_trades": n_trades,
        "median_s": round(median, 3),
        "runs_s": [round(r, 3) for r in runs],
        "target_s": TARGET_S,
        "met": median <= TARGET_S,
    }


if __name__ == "__main__":
    print(json.dumps(bench_backtest(), indent=2))
