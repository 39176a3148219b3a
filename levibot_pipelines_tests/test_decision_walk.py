"""The decision engine on walk-forward frames: per fold it chooses on the val and calib rows and
trades the test rows; a planted edge is found and pays after costs, noise stays flat."""

import json

import numpy as np
import polars as pl
import pytest

from levibot_pipelines.core.data.targets import planted_edge_market
from levibot_pipelines.core.evaluation.decision_walk import (
    best_candidate,
    champion_decision,
    decision_backtest,
    verdict,
)
from levibot_pipelines.core.evaluation.selection import decision_from_dict
from levibot_pipelines.core.trading.backtest import CostModel

VAL, CALIB, TEST, FOLDS = 3000, 3000, 4000, 3
COSTS = CostModel(10.0, 2.0)  # 24 bps round trip


def walk_frames(edge_bps: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``(pred, selection, bars)`` shaped like the walk-forward's: fold k chooses on
    [kT, kT + VAL) (val) and the next CALIB bars (calib), and is tested on the TEST after."""
    m = planted_edge_market(
        VAL + CALIB + FOLDS * TEST, edge_bps=edge_bps, horizon=16, sigma_bps=10.0, seed=seed
    )
    rng = np.random.default_rng(seed + 1)
    frame = m.select(
        "timestamp",
        p_lgbm="score",
        p_deep=pl.lit(rng.uniform(0, 1, m.height)),
        p_ensemble=pl.lit(rng.uniform(0, 1, m.height)),
        p_reversal=pl.lit(0.5 + 0.01 * rng.choice([-1.0, 1.0], m.height)),
        epistemic_p=pl.lit(np.full(m.height, 1e-4)),
    )
    pred, sel = [], []
    for k in range(FOLDS):
        s = k * TEST
        for part, lo, hi in (("val", s, s + VAL), ("calib", s + VAL, s + VAL + CALIB)):
            sel.append(frame.slice(lo, hi - lo).with_columns(fold=pl.lit(k), part=pl.lit(part)))
        pred.append(frame.slice(s + VAL + CALIB, TEST).with_columns(fold=pl.lit(k)))
    return pl.concat(pred), pl.concat(sel), m.select("timestamp", "open", "high", "low", "close")


def test_a_planted_edge_is_chosen_in_the_fold_and_pays_after_costs():
    pred, sel, bars = walk_frames(80.0, seed=0)
    out = decision_backtest(pred, sel, bars, COSTS, size=1.0)
    rep = out.report
    # 4 models x 4 horizons x 3 margins + flat, in every fold.
    assert rep["n_candidates"] == 49
    chosen = [(f["model"], f["horizon"]) for f in rep["folds"]]
    assert all(model in ("lgbm", "flat") for model, _ in chosen), chosen  # never a noise score
    assert rep["folds_traded"] >= 2 and rep["total_return"] > 0.05, rep
    assert rep["gross_total_return"] > rep["total_return"]  # costs were paid
    assert rep["verdict"].startswith(f"edge after costs in {rep['folds_positive']} of 3 folds")
    assert out.returns.size == FOLDS * TEST and np.all(np.diff(out.timestamps) > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_stays_flat_and_says_so(seed):
    pred, sel, bars = walk_frames(0.0, seed=seed)
    rep = decision_backtest(pred, sel, bars, COSTS, size=1.0).report
    assert [f["model"] for f in rep["folds"]] == ["flat"] * FOLDS
    assert rep["n_trades"] == 0 and rep["total_return"] == 0.0 and rep["turnover"] == 0.0
    assert rep["verdict"] == "no validated edge after costs: stayed flat in all 3 folds"


def test_verdict_line():
    summary = {"folds_traded": 2, "folds_positive": 1, "sharpe_daily": 1.234, "total_return": 0.05}
    assert verdict(summary, 6) == (
        "edge after costs in 1 of 6 folds (traded in 2; net Sharpe 1.23, net total +5.00%)"
    )


def test_the_engine_needs_the_walk_forward_columns():
    pred, sel, bars = walk_frames(0.0, seed=0)
    with pytest.raises(ValueError, match="p_reversal"):
        decision_backtest(pred.drop("p_reversal"), sel, bars, COSTS)


def champion_parts(edge_bps: float, seed: int) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """The newest layout's val, calib and test parts (one fold of ``walk_frames``)."""
    pred, sel, bars = walk_frames(edge_bps, seed)
    parts = {p: sel.filter((pl.col("fold") == 0) & (pl.col("part") == p)) for p in ("val", "calib")}
    return parts | {"test": pred.filter(pl.col("fold") == 0)}, bars


def test_the_champion_policy_is_chosen_like_a_fold_and_checked_on_its_test_bars():
    parts, bars = champion_parts(80.0, seed=0)
    d = champion_decision(parts, bars, COSTS, size=1.0)
    # The same choice as fold 0 of the walk-forward, from the same val and calib bars.
    fold0 = decision_backtest(*walk_frames(80.0, seed=0), COSTS, size=1.0).report["folds"][0]
    assert (d["policy"]["model"], d["policy"]["horizon"]) == (fold0["model"], fold0["horizon"])
    assert d["policy"]["model"] == "lgbm" and d["map"]["n_samples"] > 5000  # refit on both
    assert d["n_candidates"] == len(d["candidates"]) == 49
    assert d["candidates_passed"] == sum(c["passed"] for c in d["candidates"]) >= 1
    assert d["test"]["n_trades"] == fold0["n_trades"] > 0
    assert d["test"]["net_return"] == pytest.approx(fold0["net_return"])
    assert d["test"]["gross_return"] > d["test"]["net_return"]
    json.dumps(d)  # stored with the champions as JSON
    policy, emap = decision_from_dict(d)
    assert policy.horizon == d["policy"]["horizon"] and emap is not None


def test_the_champion_policy_is_flat_on_noise_with_its_reason():
    parts, bars = champion_parts(0.0, seed=1)
    d = champion_decision(parts, bars, COSTS)
    assert d["policy"]["model"] == "flat" and d["map"] is None
    assert d["policy"]["reason"] == "no validated edge after costs"
    assert d["test"] == {"n_trades": 0, "net_return": 0.0, "gross_return": 0.0}
    with pytest.raises(ValueError, match="needs the val, calib and test parts"):
        champion_decision({"val": parts["val"]}, bars, COSTS)


def test_the_best_candidate_shown_for_a_flat_fold_has_enough_trades_to_mean_something():
    table = pl.DataFrame(
        {
            "model": ["ensemble", "lgbm", "deep", "flat"],
            "horizon": [4, 16, 1, 0],
            "margin_bps": [0.0, 5.0, 0.0, 0.0],
            "n_trades": [2, 25, 300, 0],
            "t_stat": [611.9, 2.1, 1.4, 0.0],
            "mean_net_bps": [372.7, 8.0, 1.0, 0.0],
            "passed": [False, False, False, False],
        }
    )
    best = best_candidate(table)
    assert (best["best"], best["best_t_stat"], best["best_n_trades"]) == ("lgbm@16+5bps", 2.1, 25)
    # With no candidate of 20 trades, the highest t-statistic is still shown, with its trades.
    few = best_candidate(table.filter(pl.col("n_trades") < 20))
    assert (few["best"], few["best_n_trades"], few["candidates_passed"]) == (
        "ensemble@4+0bps",
        2,
        0,
    )
