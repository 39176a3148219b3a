"""Skill judged by what trades: the moving-block bootstrap, IC, score deciles, paired differences
and the quantile-bin ECE, on hand-checked cases and seeded planted/independent markets."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from levibot_pipelines.core.evaluation.skill import (
    BootstrapConfig,
    block_bootstrap_indices,
    resample_counts,
    resample_stats,
    skill_scores,
    weighted_midranks,
)
from levibot_pipelines.core.metrics import ece, ece_quantile, log_loss

FAST = BootstrapConfig(block=20, resamples=200, seed=0)


def _market(n: int, signal: float, seed: int):
    """Scores p = 0.5 + 0.05 z and next returns r = signal * z + noise (bps-sized)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    r = 1e-3 * (signal * z + rng.normal(size=n))
    return (r > 0).astype(float), r, 0.5 + 0.05 * np.tanh(z)


def test_block_equal_to_n_gives_the_original_order_in_every_row():
    idx = block_bootstrap_indices(7, 7, 4, seed=3)
    assert idx.shape == (4, 7)
    assert (idx == np.arange(7)).all()


def test_blocks_are_runs_of_consecutive_bars_within_the_series():
    # n = 5, block = 2: ceil(5/2) = 3 blocks with starts in [0, 3], the last cut to one bar
    idx = block_bootstrap_indices(5, 2, 50, seed=1)
    assert idx.shape == (50, 5)
    assert (np.diff(idx[:, [0, 1]]) == 1).all() and (np.diff(idx[:, [2, 3]]) == 1).all()
    assert idx[:, [0, 2, 4]].max() <= 3 and idx.min() >= 0
    assert set(idx[:, 0]) == {0, 1, 2, 3}  # every start is drawn in 50 resamples
    assert (block_bootstrap_indices(5, 2, 50, seed=1) == idx).all()  # seeded
    assert not (block_bootstrap_indices(5, 2, 50, seed=2) == idx).all()


@pytest.mark.parametrize(
    ("args", "match"),
    [((5, 6, 10, 0), "block must be <= n = 5, got 6"), ((5, 0, 10, 0), "block must be")],
)
def test_bad_bootstrap_arguments_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        block_bootstrap_indices(*args)


def test_counts_and_midranks_hand_computed():
    assert resample_counts(np.array([[0, 0, 2], [1, 2, 0]])).tolist() == [[2, 0, 1], [1, 1, 1]]
    # values 0.3, 0.1, 0.3, 0.2. Row 0 (each bar once): ranks 3.5, 1, 3.5, 2.
    # Row 1 holds 0.1 twice, 0.2 and one 0.3: 0.1 -> 1.5, 0.2 -> 3, 0.3 -> 4.
    w = np.array([[1.0, 1, 1, 1], [0, 2, 1, 1]])
    ranks = weighted_midranks(np.array([0.3, 0.1, 0.3, 0.2]), w)
    assert ranks[0].tolist() == [3.5, 1.0, 3.5, 2.0]
    assert ranks[1, 1:].tolist() == [1.5, 4.0, 3.0]


def test_resample_statistics_equal_scipy_and_sklearn_on_the_resampled_series():
    y, r, p = _market(400, 0.3, seed=5)
    p = np.round(p, 2)  # ties in the scores
    idx = block_bootstrap_indices(400, 25, 6, seed=9)
    stats = resample_stats(y, r, p, resample_counts(idx))
    for b, rows in enumerate(idx):
        assert stats["ic"][b] == pytest.approx(spearmanr(p[rows], r[rows]).statistic, abs=1e-12)
        assert stats["auc"][b] == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-12)
        assert stats["log_loss"][b] == pytest.approx(log_loss(y[rows], p[rows]), abs=1e-12)


def test_planted_correlation_gives_an_ic_ci_above_zero():
    y, r, p = _market(2000, 0.3, seed=0)
    s = skill_scores(y, r, {"deep": p}, FAST)["deep"]
    assert s["ic"] == pytest.approx(spearmanr(p, r).statistic, abs=1e-12)
    assert 0.0 < s["ic_ci"][0] < s["ic"] < s["ic_ci"][1]
    assert s["top_minus_bottom_ci_bps"][0] > 0.0  # top decile earns more than the bottom one


def test_independent_scores_give_an_ic_ci_containing_zero_in_most_seeds():
    covers = []
    for seed in range(20):
        y, r, p = _market(1000, 0.0, seed=seed)
        lo, hi = skill_scores(y, r, {"lgbm": p}, FAST)["lgbm"]["ic_ci"]
        covers.append(lo <= 0.0 <= hi)
    assert sum(covers) >= 16  # ~95% coverage expected; 16 of 20 leaves room for chance


def test_cis_contain_their_point_estimates():
    y, r, p = _market(1500, 0.1, seed=4)
    rule = 0.5 + 0.02 * np.sign(np.r_[0.0, r[:-1]])  # two-valued: no deciles
    out = skill_scores(y, r, {"lgbm": p, "deep": 1 - p, "reversal": rule}, FAST)
    for s in out.values():
        assert s["ic_ci"][0] <= s["ic"] <= s["ic_ci"][1]
        for d in s["deciles"]:
            assert d["ci_bps"][0] <= d["mean_bps"] <= d["ci_bps"][1]
        for pair in s["paired"].values():
            assert (
                pair["log_loss_diff_ci"][0] <= pair["log_loss_diff"] <= pair["log_loss_diff_ci"][1]
            )
            assert pair["auc_diff_ci"][0] <= pair["auc_diff"] <= pair["auc_diff_ci"][1]
    assert set(out["deep"]["paired"]) == {"deep_vs_lgbm", "deep_vs_reversal"}
    assert set(out["lgbm"]["paired"]) == {"lgbm_vs_reversal"} and out["reversal"]["paired"] == {}
    # deep = 1 - lgbm reverses the ranking of a planted edge: its AUC is the lower one
    assert out["deep"]["paired"]["deep_vs_lgbm"]["auc_diff"] < 0


def test_paired_differences_use_the_same_resamples_for_both_models():
    y, r, p = _market(800, 0.2, seed=2)
    out = skill_scores(y, r, {"lgbm": p, "deep": p.copy()}, FAST)
    pair = out["deep"]["paired"]["deep_vs_lgbm"]
    assert pair["log_loss_diff"] == 0.0 and pair["log_loss_diff_ci"] == [0.0, 0.0]
    assert pair["auc_diff_ci"] == [0.0, 0.0]


def test_deciles_hand_computed():
    # 20 distinct scores, r = 0..19: decile d holds bars 2d and 2d+1, mean 1e4 * (2d + 0.5) bps
    p, r = np.arange(20) / 20, np.arange(20.0)
    y = (np.arange(20) % 2).astype(float)
    s = skill_scores(y, r, {"lgbm": p}, BootstrapConfig(block=5, resamples=50))["lgbm"]
    assert [d["n"] for d in s["deciles"]] == [2] * 10
    first, last = s["deciles"][0], s["deciles"][-1]
    assert (first["decile"], first["p_lo"], first["p_hi"]) == (1, 0.0, 0.05)
    assert first["mean_bps"] == pytest.approx(5_000.0) and last["mean_bps"] == pytest.approx(
        185_000.0
    )
    assert s["top_minus_bottom_bps"] == pytest.approx(180_000.0)
    assert s["ic"] == pytest.approx(1.0)


def test_scores_with_fewer_than_ten_distinct_values_get_no_deciles():
    y, r, _ = _market(300, 0.0, seed=1)
    rule = np.where(np.arange(300) % 3 == 0, 0.48, 0.52)
    s = skill_scores(y, r, {"last_return": rule}, FAST)["last_return"]
    assert s["deciles"] == [] and s["deciles_skipped"] == "fewer than 10 distinct scores"
    assert np.isnan(s["top_minus_bottom_bps"])


def test_constant_scores_have_an_undefined_ic():
    y, r, _ = _market(300, 0.0, seed=1)
    s = skill_scores(y, r, {"lgbm": np.full(300, 0.5)}, FAST)["lgbm"]
    assert np.isnan(s["ic"]) and np.isnan(s["ic_ci"]).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="length mismatch"):
        skill_scores([0, 1, 1], [0.1, -0.1, 0.2], {"lgbm": [0.5, 0.6]}, FAST)
    with pytest.raises(ValueError, match="fwd_ret"):
        skill_scores([0, 1], [0.1, np.nan], {"lgbm": [0.5, 0.6]}, FAST)
    with pytest.raises(ValueError, match="level must be in"):
        BootstrapConfig(level=1.0)


def test_ece_quantile_hand_computed():
    # median edge 0.25: bins {0.1, 0.2} (mean p 0.15, no ups) and {0.3, 0.9} (mean p 0.6, all up)
    # -> 0.5 * 0.15 + 0.5 * 0.4 = 0.275; two uniform bins give 0.75 * |1/3 - 0.2| + 0.25 * 0.1
    y, p = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9]
    assert ece_quantile(y, p, n_bins=2) == pytest.approx(0.275)
    assert ece(y, p, n_bins=2) == pytest.approx(0.125)
    assert ece_quantile([1, 0, 1, 1], [0.6] * 4) == pytest.approx(0.15)  # one bin: |0.75 - 0.6|
    with pytest.raises(ValueError, match="n_bins must be a positive integer, got 0"):
        ece_quantile(y, p, n_bins=0)


def test_ece_quantile_resolves_concentrated_scores_that_uniform_bins_lump_together():
    # p uniform on [0.45, 0.55], truth P(up) = 0.5 + 3 (p - 0.5): the true mean |error| is
    # 2 E|p - 0.5| = 0.05. Uniform bins of width 1/15 put 2/3 of the bars in [7/15, 8/15), where
    # the errors cancel, and 1/6 in each outer bin (mean |error| 2 * 0.0417): ECE ~ 0.028.
    rng = np.random.default_rng(0)
    p = rng.uniform(0.45, 0.55, 20_000)
    y = (rng.random(20_000) < 0.5 + 3 * (p - 0.5)).astype(float)
    assert ece_quantile(y, p) == pytest.approx(0.05, abs=0.01)
    assert ece(y, p) == pytest.approx(0.028, abs=0.005)
