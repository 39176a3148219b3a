"""The policy backtest with the configured policy and costs, and its plots: shared by
``model_report``, ``levibot evaluate`` and the publisher."""

from __future__ import annotations

import polars as pl

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel
from levibot_pipelines.core.trading.policy import PolicyConfig
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest, backtest_predictions
from levibot_pipelines.settings import Settings


def policy_config(s: Settings) -> PolicyConfig:
    return PolicyConfig(
        base_threshold=s.entry_threshold,
        allow_short=s.allow_short,
        max_uncertainty=s.max_uncertainty,
    )


def backtest_config(s: Settings, symbol: str) -> BacktestConfig:
    return BacktestConfig(costs=CostModel(fee_bps=s.fee_bps, slippage_bps=s.slippage_for(symbol)))


def backtest_symbol(
    s: Settings, symbol: str, predictions: pl.DataFrame, bars: pl.DataFrame, features: pl.DataFrame
) -> SymbolBacktest:
    """Backtest the walk-forward ``predictions`` of ``symbol`` on its candles ``bars`` (every
    stored bar) with its feature rows ``features``, under the configured policy and costs."""
    return backtest_predictions(
        predictions,
        bars.filter(pl.col("symbol") == symbol) if "symbol" in bars.columns else bars,
        features.filter(pl.col("symbol") == symbol) if "symbol" in features.columns else features,
        policy_config(s),
        backtest_config(s, symbol),
    )
