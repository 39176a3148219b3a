"""The live decision replays what was published on the real candles before deciding."""

import numpy as np
import polars as pl
import pytest

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel
from levibot_pipelines.core.trading.paper import HISTORY_COLUMNS, live_decision
from levibot_pipelines.core.trading.policy import PolicyConfig

TF = 900_000
N = 40
NO_COSTS = BacktestConfig(costs=CostModel(fee_bps=0.0, slippage_bps=0.0))
# The settings' entry threshold (0.55) and long-only default, without the uncertainty cap.
POLICY = PolicyConfig(base_threshold=0.55, allow_short=False, max_uncertainty=None)


def _candles(low_at: dict[int, float] | None = None) -> pl.DataFrame:
    """Flat 100 candles (open = close = 100, high 100.2, low 99.8); ``low_at`` overrides lows."""
    low = np.full(N, 99.8)
    for i, v in (low_at or {}).items():
        low[i] = v
    return pl.DataFrame(
        {
            "timestamp": np.arange(N, dtype=np.int64) * TF,
            "open": np.full(N, 100.0),
            "high": np.full(N, 100.2),
            "low": low,
            "close": np.full(N, 100.0),
        }
    )


def _features() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": np.arange(N, dtype=np.int64) * TF,
            "vol_20": np.full(N, 0.002),
            "ret_1": np.zeros(N),
        }
    )


def _history(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "bar_time": pl.Int64,
            "signal": pl.String,
            "size": pl.Float64,
            "close": pl.Float64,
            "stop_loss": pl.Float64,
            "take_profit": pl.Float64,
        },
        orient="row",
    ).select(HISTORY_COLUMNS)


def _decide(history: pl.DataFrame, p: float, candles=None, multiplier: float = 1.0):
    return live_decision(
        candles if candles is not None else _candles(),
        _features(),
        history,
        bar_time=(N - 1) * TF,
        p=p,
        confidence=abs(2 * p - 1),
        uncertainty=None,
        policy=POLICY,
        cfg=NO_COSTS,
        size_multiplier=multiplier,
    )


EMPTY = _history([])
# A long entered at the close of bar 30 (fills at open(31) = 100), stop 1% -> 99, take-profit 2%.
ENTERED = _history([(30 * TF, "ENTRY_LONG", 0.5, 100.0, 99.0, 102.0)])


def test_confident_from_flat_enters_long_with_levels_from_the_close():
    d = _decide(EMPTY, p=0.9)
    assert d.signal == "ENTRY_LONG"
    assert d.size > 0 and d.position == pytest.approx(d.size)
    assert d.stop_loss < 100.0 < d.take_profit
    assert d.paper_equity == pytest.approx(1.0) and d.paper_drawdown == pytest.approx(0.0)


def test_unconfident_from_flat_holds_flat():
    d = _decide(EMPTY, p=0.52)
    assert (d.signal, d.position, d.size) == ("HOLD", 0.0, 0.0)
    assert d.stop_loss is None and d.take_profit is None


def test_published_entry_is_held_with_the_levels_set_at_the_fill():
    d = _decide(ENTERED, p=0.52)  # between exit (0.5) and entry: keep the long
    assert d.signal == "HOLD"
    assert d.position == pytest.approx(0.5)
    # Levels from the fill at open(31) = 100: the engine's stop 99 and take-profit 102.
    assert d.stop_loss == pytest.approx(99.0) and d.take_profit == pytest.approx(102.0)


def test_published_entry_exits_when_the_model_turns():
    d = _decide(ENTERED, p=0.4)
    assert (d.signal, d.position) == ("EXIT", 0.0)


def test_stop_between_publishes_leaves_the_paper_position_flat():
    # Bar 35 trades down to 98.5: the 99 stop fills at 99 (no slippage), a 1% loss on size 0.5.
    d = _decide(ENTERED, p=0.52, candles=_candles({35: 98.5}))
    assert (d.signal, d.position) == ("HOLD", 0.0)
    assert d.paper_equity == pytest.approx(1 - 0.5 * 0.01)
    assert d.paper_drawdown == pytest.approx(0.005)


def test_halted_kill_switch_blocks_entries():
    d = _decide(EMPTY, p=0.9, multiplier=0.0)
    assert (d.signal, d.size, d.position) == ("HOLD", 0.0, 0.0)


def test_reducing_cuts_the_size():
    full, half = _decide(EMPTY, p=0.9), _decide(EMPTY, p=0.9, multiplier=0.5)
    assert half.size == pytest.approx(full.size * 0.5)


def test_missing_bar_is_an_error():
    with pytest.raises(ValueError, match="no candle at bar_time"):
        live_decision(
            _candles().head(N - 1),
            _features(),
            EMPTY,
            bar_time=(N - 1) * TF,
            p=0.9,
            confidence=0.8,
            uncertainty=None,
            policy=POLICY,
            cfg=NO_COSTS,
        )
