"""Choosing the decision policy inside a fold, and the deflated Sharpe ratio of the choice."""

import inspect
import json

import numpy as np
import polars as pl
import pytest

from levibot_pipelines.core.data.targets import planted_edge_market
from levibot_pipelines.core.evaluation.selection import (
    HORIZONS,
    MARGINS_BPS,
    Window,
    decision_from_dict,
    select_decision,
)
from levibot_pipelines.core.trading.backtest import CostModel
from levibot_pipelines.core.trading.performance import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
)

COSTS = CostModel(10.0, 2.0)  # 24 bps round trip


def market_window(df: pl.DataFrame, extra_models: dict | None = None) -> Window:
    scores = {"lgbm": df["score"].to_numpy()} | (extra_models or {})
    cols = [df[c].to_numpy() for c in ("timestamp", "open", "high", "low", "close")]
    return Window(*cols, scores=scores)


@pytest.fixture(scope="module")
def edge_market() -> Window:
    df = planted_edge_market(12_000, edge_bps=80.0, horizon=16, sigma_bps=10.0, seed=2)
    noise = np.random.default_rng(7).uniform(0, 1, df.height)
    return market_window(df, {"deep": noise})


def test_candidates_are_the_fixed_grid_plus_flat(edge_market):
    sel = select_decision(
        edge_market.take(slice(0, 3000)), edge_market.take(slice(3000, 6000)), COSTS
    )
    assert sel.n_candidates == 2 * len(HORIZONS) * len(MARGINS_BPS) + 1 == 25
    t = sel.table
    assert t.height == 25 and t["chosen"].sum() == 1
    assert t.filter(pl.col("model") == "flat")["status"].to_list() == ["flat"]
    chosen = t.filter(pl.col("chosen")).row(0, named=True)
    # The planted edge: the informative model at the planted horizon, clearing the bar.
    assert (
        (sel.policy.model, sel.policy.horizon)
        == ("lgbm", 16)
        == (chosen["model"], chosen["horizon"])
    )
    assert chosen["passed"] and chosen["n_trades"] >= 20 and chosen["mean_net_bps"] > 0
    assert sel.policy.cost_bps == 24.0 and sel.policy.exit_bps == 12.0
    # The map is refitted on both windows: 6000 bars less the last 17 of each window.
    assert sel.emap is not None and sel.emap.n_samples == 2 * (3000 - 17)


def test_noise_scores_choose_flat():
    df = planted_edge_market(6000, edge_bps=0.0, horizon=16, sigma_bps=10.0, seed=4)
    w = market_window(df)
    sel = select_decision(w.take(slice(0, 3000)), w.take(slice(3000, 6000)), COSTS)
    assert sel.policy.is_flat and sel.emap is None
    assert sel.policy.reason == "no validated edge after costs"
    assert sel.n_candidates == len(HORIZONS) * len(MARGINS_BPS) + 1
    assert not sel.table["passed"].any()


def test_too_few_samples_is_a_skipped_candidate_not_an_error(edge_market):
    fit, score = edge_market.take(slice(0, 250)), edge_market.take(slice(250, 500))
    sel = select_decision(fit, score, COSTS)
    # 250 bars: h=48 leaves 201 known returns (>= 200), every horizon fits; 230 bars do not.
    small = select_decision(edge_market.take(slice(0, 230)), score, COSTS)
    skipped = small.table.filter(pl.col("status") == "too few samples")
    assert set(skipped["horizon"].to_list()) == {48}
    assert sel.table.filter(pl.col("status") == "too few samples").height == 0


def test_selection_never_sees_the_test_window():
    # The signature takes only the two selection windows ...
    params = list(inspect.signature(select_decision).parameters)
    assert params[:3] == ["fit", "score", "costs"] and not any("test" in p for p in params)
    # ... and two markets that agree up to the end of the score window but differ after it
    # (another seed's test window) give the same choice: nothing later is read.
    a = planted_edge_market(10_000, edge_bps=80.0, horizon=16, sigma_bps=10.0, seed=2)
    b = planted_edge_market(10_000, edge_bps=-80.0, horizon=16, sigma_bps=30.0, seed=9)
    b = pl.concat([a.head(6000), b.tail(4000).with_columns(a.tail(4000)["timestamp"])])
    wa, wb = market_window(a), market_window(b)
    assert not np.array_equal(wa.open[6000:], wb.open[6000:])
    sa, sb = (
        select_decision(w.take(slice(0, 3000)), w.take(slice(3000, 6000)), COSTS) for w in (wa, wb)
    )
    assert sa.policy == sb.policy and sa.emap == sb.emap and sa.table.equals(sb.table)


def test_selection_round_trips_through_json_and_gives_test_signals(edge_market):
    sel = select_decision(
        edge_market.take(slice(0, 3000)), edge_market.take(slice(3000, 6000)), COSTS
    )
    stored = json.loads(json.dumps(sel.to_dict()))
    assert stored["n_candidates"] == 25
    policy, emap = decision_from_dict(stored)
    assert policy == sel.policy and emap == sel.emap
    test = edge_market.take(slice(6000, 10_000))
    sig = sel.signals(test, size=0.1)
    assert len(sig) == 4000 and sig.entry_side.any()
    assert set(np.unique(sig.size)) <= {0.0, 0.1}


def test_bad_selection_input_is_named(edge_market):
    fit = edge_market.take(slice(0, 300))
    other = Window(fit.timestamps, fit.open, fit.high, fit.low, fit.close, {"x": fit.open})
    with pytest.raises(ValueError, match="different models"):
        select_decision(fit, other, COSTS)
    with pytest.raises(ValueError, match="alpha"):
        select_decision(fit, fit, COSTS, alpha=1.5)
    with pytest.raises(ValueError, match="rows like timestamps"):
        Window(fit.timestamps, fit.open[:-1], fit.high, fit.low, fit.close, {"x": fit.open})


# Deflated Sharpe ratio (Bailey & Lopez de Prado 2014).
# N = 10, V = 0.0025: Phi^-1(1 - 1/10) = 1.2815516, Phi^-1(1 - 1/(10 e)) = 1.7892418;
# (1 - 0.5772157) 1.2815516 + 0.5772157 1.7892418 = 1.5745983; x sqrt(V) = 0.05 -> 0.0787299.
# Returns 0.011, -0.009 alternating, n = 100: mean 0.001, std(ddof=1) 0.0100504, SR 0.0994987;
# skew 0 and kurtosis 1 (two equally likely points), so PSR's z = (SR - SR*) sqrt(99):
# vs 0: z = 0.990 -> PSR 0.8389129; vs 0.0787299: z = 0.2066472 -> DSR 0.5818573.
R = np.array([0.011, -0.009] * 50)


def test_expected_max_sharpe_by_hand():
    assert expected_max_sharpe(10, 0.0025) == pytest.approx(0.0787299, abs=1e-7)
    assert expected_max_sharpe(1, 0.0025) == 0.0
    assert expected_max_sharpe(100, 0.0025) > expected_max_sharpe(10, 0.0025)


def test_deflated_sharpe_by_hand_and_its_limits():
    assert deflated_sharpe_ratio(R, 10, 0.0025) == pytest.approx(0.5818573, abs=1e-6)
    assert deflated_sharpe_ratio(R, 1, 0.0025) == pytest.approx(0.8389129, abs=1e-6)
    assert deflated_sharpe_ratio(R, 1) == probabilistic_sharpe_ratio(R)
    # More trials deflate more; the default variance is the null 1 / (n - 1).
    assert (
        deflated_sharpe_ratio(R, 49) < deflated_sharpe_ratio(R, 10) < probabilistic_sharpe_ratio(R)
    )
    assert deflated_sharpe_ratio(R, 10) == pytest.approx(
        probabilistic_sharpe_ratio(R, expected_max_sharpe(10, 1 / 99))
    )
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio(R, 0)
    with pytest.raises(ValueError, match="sharpe_variance"):
        deflated_sharpe_ratio(R, 5, -1.0)
