"""The live decision of the decision engine replays what was published on the real candles
before deciding, and follows the rule the backtest validated (``core.trading.live``)."""

import numpy as np
import polars as pl
import pytest

from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel
from levibot_pipelines.core.trading.decision import (
    DecisionPolicy,
    ExpectedReturnMap,
    flat_policy,
)
from levibot_pipelines.core.trading.live import EngineInputs, live_decision
from levibot_pipelines.core.trading.paper import HISTORY_COLUMNS
from levibot_pipelines.core.trading.policy import PolicyConfig

TF = 900_000
N = 40
NO_COSTS = BacktestConfig(costs=CostModel(fee_bps=0.0, slippage_bps=0.0))
# The seed policy only sizes (max_size 1.0) and reports the regime and threshold.
SEED = PolicyConfig(base_threshold=0.55, allow_short=False, max_uncertainty=None)
# mu_hat(s) = -0.01 + 0.02 s (log return): 0.9 -> +80 bps, 0.5 -> 0, 0.1 -> -80 bps.
EMAP = ExpectedReturnMap((0.0, 1.0), (-0.01, 0.01), 1000)
# Hold at least 4 bars; round trip 24 bps, no margin; exit below 12 bps (half the round trip).
LONG_ONLY = DecisionPolicy("ensemble", 4, 0.0, 24.0, 12.0)
BOTH_SIDES = DecisionPolicy("ensemble", 4, 0.0, 24.0, 12.0, allow_short=True)


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


def _decide(history, score, *, policy=LONG_ONLY, candles=None, multiplier=1.0, unc=None):
    flat = policy.is_flat
    return live_decision(
        candles if candles is not None else _candles(),
        _features(),
        history,
        bar_time=(N - 1) * TF,
        engine=EngineInputs(policy, None if flat else EMAP, score, unc),
        p=0.6,
        confidence=0.2,
        seed_policy=SEED,
        cfg=NO_COSTS,
        size_multiplier=multiplier,
    )


EMPTY = _history([])
# A long entered at the close of bar 30 (fills at open(31) = 100) by an earlier policy, with its
# stop 1% -> 99 and take-profit 2% -> 102.
ENTERED = _history([(30 * TF, "ENTRY_LONG", 0.5, 100.0, 99.0, 102.0)])
# The engine's long entered at the close of bar 36 (no levels): 3 bars ago at bar 39.
RECENT = _history([(36 * TF, "ENTRY_LONG", 1.0, 100.0, None, None)])


def test_an_entry_from_flat_needs_the_expected_gain_to_clear_the_round_trip():
    d = _decide(EMPTY, 0.9)  # +80 bps gross - 24 = +56 net
    assert (d.signal, d.size, d.position, d.closed_side) == ("ENTRY_LONG", 1.0, 1.0, None)
    assert (d.horizon, d.decision_model) == (4, "ensemble")
    assert d.expected_net_bps == pytest.approx(56.0)
    assert d.reason == "entry: expected net +56.0 bps over 4 bars"
    assert d.stop_loss is None and d.take_profit is None  # the map was fitted without stops
    assert d.paper_equity == pytest.approx(1.0) and d.paper_drawdown == pytest.approx(0.0)


def test_a_gain_below_the_round_trip_holds_flat_and_says_why():
    d = _decide(EMPTY, 0.52)  # +4 bps gross: -20 net
    assert (d.signal, d.size, d.position) == ("HOLD", 0.0, 0.0)
    assert d.expected_net_bps == pytest.approx(-20.0)
    assert d.reason == "expected gain below costs: net -20.0 bps over 4 bars (margin 0 bps)"


def test_the_flat_policy_never_enters_and_says_there_is_no_edge():
    d = _decide(EMPTY, 0.99, policy=flat_policy(24.0))
    assert (d.signal, d.size, d.position) == ("HOLD", 0.0, 0.0)
    assert (d.horizon, d.expected_net_bps, d.decision_model) == (None, None, "flat")
    assert d.reason == "no validated edge after costs"


def test_the_flat_policy_closes_a_position_left_by_an_earlier_policy():
    d = _decide(ENTERED, 0.99, policy=flat_policy(24.0))
    assert (d.signal, d.position) == ("EXIT", 0.0)
    assert d.reason.startswith("exit long: no validated edge after costs")


def test_a_position_is_held_for_the_horizon_whatever_the_score():
    d = _decide(RECENT, 0.1)  # -80 bps for the long, but 3 of 4 bars held
    assert (d.signal, d.position, d.closed_side) == ("HOLD", 1.0, None)
    assert d.reason == "holding long: 3 of 4 bars"


def test_after_the_horizon_a_long_is_held_while_worth_half_a_round_trip():
    d = _decide(ENTERED, 0.7)  # +40 bps >= 12
    assert (d.signal, d.position) == ("HOLD", 0.5)
    # The earlier policy's levels, set from the fill at open(31) = 100, stay with it.
    assert d.stop_loss == pytest.approx(99.0) and d.take_profit == pytest.approx(102.0)


def test_after_the_horizon_a_long_exits_below_the_exit_level():
    d = _decide(ENTERED, 0.5)  # 0 bps < 12
    assert (d.signal, d.position, d.closed_side) == ("EXIT", 0.0, "long")
    assert d.reason == "exit long: expected gross +0.0 bps below the exit level 12 bps"
    assert _decide(ENTERED, float("nan")).signal == "EXIT"  # no score: exit


def test_an_exit_may_reverse_to_the_other_side_at_the_same_open():
    d = _decide(ENTERED, 0.1, policy=BOTH_SIDES)  # long -80 bps; short +80 - 24 = +56 net
    assert (d.signal, d.size, d.position, d.closed_side) == ("ENTRY_SHORT", 1.0, -1.0, "long")
    # Published, the reversal replays as one: the short is held at the next decision.
    history = _history(
        [
            (30 * TF, "ENTRY_LONG", 0.5, 100.0, 99.0, 102.0),
            (35 * TF, "ENTRY_SHORT", 1.0, 100.0, None, None),
        ]
    )
    later = _decide(history, 0.5, policy=BOTH_SIDES)  # 4 bars held; short gross 0 < 12
    assert (later.signal, later.position, later.closed_side) == ("EXIT", 0.0, "short")
    assert later.reason.startswith("exit short")


def test_the_uncertainty_penalty_reads_the_map_at_a_pessimistic_score():
    penalized = DecisionPolicy("ensemble", 4, 0.0, 24.0, 12.0, uncertainty_penalty=1.0)
    d = _decide(EMPTY, 0.9, policy=penalized, unc=0.2)  # read at 0.7: +40 gross, +16 net
    assert d.signal == "ENTRY_LONG" and d.expected_net_bps == pytest.approx(16.0)


def test_stop_between_publishes_leaves_the_paper_position_flat():
    # Bar 35 trades down to 98.5: the 99 stop fills at 99 (no slippage), a 1% loss on size 0.5.
    d = _decide(ENTERED, 0.52, candles=_candles({35: 98.5}))
    assert (d.signal, d.position) == ("HOLD", 0.0)
    assert d.paper_equity == pytest.approx(1 - 0.5 * 0.01)
    assert d.paper_drawdown == pytest.approx(0.005)


def test_halted_kill_switch_blocks_entries():
    d = _decide(EMPTY, 0.9, multiplier=0.0)
    assert (d.signal, d.size, d.position) == ("HOLD", 0.0, 0.0)
    assert d.reason == "no entry: kill-switch halted (entry: expected net +56.0 bps over 4 bars)"


def test_reducing_cuts_the_size():
    assert _decide(EMPTY, 0.9, multiplier=0.5).size == pytest.approx(0.5)


def test_missing_bar_is_an_error():
    with pytest.raises(ValueError, match="no candle at bar_time"):
        _decide(EMPTY, 0.9, candles=_candles().head(N - 1))
