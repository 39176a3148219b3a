"""Positive and negative controls of the decision engine, as a mini walk-forward.

Each fold: fit window (3000 bars, like LEVIBOT_WALK's val) -> score window (3000, like calib)
-> test window (4000), the next fold starting one test window later; the policy is chosen on
the two selection windows only (``select_decision``) and traded, frozen, on the test window
with the real costs (10 bps fee + 2 bps slippage per side: a 24 bps round trip).

- Planted edge: a random walk (10 bps per bar) whose score, above 0.6 on 2% of bars, announces
  +80 bps over the next 16 bars (``planted_edge_market``). Trading exactly those bars would earn
  about 80 - 24 = 56 bps per trade with a per-trade std near 50 bps: about 60 trades per window,
  a t-statistic near 8 before the engine's own losses (a map fitted on 3000 noisy bars, events
  missed while holding). A noise model ("deep") competes with the informative one ("lgbm").
- Random walk: the same market without the edge; the score tells nothing.
"""

import numpy as np
import pytest

from levibot_pipelines.core.data.targets import planted_edge_market
from levibot_pipelines.core.evaluation.selection import Window, select_decision
from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, run_backtest
from levibot_pipelines.core.trading.performance import daily_returns, deflated_sharpe_ratio

COSTS = CostModel(10.0, 2.0)
ROUND_TRIP = 24e-4
FIT, SCORE, TEST, FOLDS = 3000, 3000, 4000, 6


def walk_forward(edge_bps: float, seed: int) -> dict:
    """Choose per fold on fit + score, trade the test window; the per-fold choices and the
    concatenated test results."""
    df = planted_edge_market(
        FIT + SCORE + FOLDS * TEST, edge_bps=edge_bps, horizon=16, sigma_bps=10.0, seed=seed
    )
    noise = np.random.default_rng(seed + 100).uniform(0, 1, df.height)
    cols = [df[c].to_numpy() for c in ("timestamp", "open", "high", "low", "close")]
    full = Window(*cols, scores={"lgbm": df["score"].to_numpy(), "deep": noise})
    chosen, returns, ts, trades = [], [], [], 0
    for k in range(FOLDS):
        s = k * TEST
        sel = select_decision(
            full.take(slice(s, s + FIT)), full.take(slice(s + FIT, s + FIT + SCORE)), COSTS
        )
        test = full.take(slice(s + FIT + SCORE, s + FIT + SCORE + TEST))
        res = run_backtest(
            test.timestamps, test.open, test.high, test.low, test.close, sel.signals(test),
            BacktestConfig(COSTS),
        )  # fmt: skip
        chosen.append((sel.policy.model, sel.policy.horizon))
        returns.append(res.returns)
        ts.append(res.timestamps)
        trades += res.trades.height
    r = np.concatenate(returns)
    _, daily = daily_returns(np.concatenate(ts), r)
    return {
        "chosen": chosen,
        "n_candidates": sel.n_candidates,
        "total_return": float(np.prod(1 + r) - 1),
        "n_trades": trades,
        "dsr": deflated_sharpe_ratio(daily, sel.n_candidates),
    }


def test_planted_edge_is_found_at_its_horizon_and_pays_after_costs():
    # Seeds 0, 1, 2 (the first three, not picked): every seed must pay after costs and never
    # trade the noise model; pooled, horizon 16 must be the engine's usual choice. Measured over
    # seeds 0-5 (36 folds): lgbm@16 in 26, lgbm@48 in 4, FLAT in 6, the noise model never; net
    # positive on test for every seed (+72% to +421%); seeds 0 and 1 are the weakest (16 in 3
    # and 2 of their 6 folds, the others 48 or FLAT).
    chosen = []
    for seed in (0, 1, 2):
        out = walk_forward(80.0, seed=seed)
        assert out["n_candidates"] == 25  # 2 models x 4 horizons x 3 margins + FLAT
        traded = [c for c in out["chosen"] if c[0] != "flat"]
        assert len(traded) >= FOLDS // 2, (seed, out["chosen"])
        assert all(model == "lgbm" for model, _ in traded), (seed, out["chosen"])
        assert out["total_return"] > 0.10, (seed, out)
        # Deflated Sharpe (25 trials, daily returns) measured 0.75 on seed 1 (+72%), 1.0 on 3.
        assert out["dsr"] > 0.5, (seed, out)
        chosen += traded
    horizons = [h for _, h in chosen]
    assert set(horizons) <= {16, 48}, chosen
    assert horizons.count(16) > len(horizons) / 2, chosen


@pytest.mark.parametrize("seed", [0, 1])
def test_random_walk_stays_flat_and_loses_at_most_a_few_round_trips(seed):
    # Measured, seeds 0-5: FLAT in all 36 folds, no test trade, net 0.
    out = walk_forward(0.0, seed=seed)
    flat_folds = sum(model == "flat" for model, _ in out["chosen"])
    assert flat_folds >= FOLDS - 1, out["chosen"]
    assert out["total_return"] >= -3 * ROUND_TRIP, out
