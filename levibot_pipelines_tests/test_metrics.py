"""Evaluation metrics: hand-computed values, reference implementations, input errors."""

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from levibot_pipelines.core.metrics import (
    accuracy_at_coverage,
    auc,
    brier,
    brier_skill_score,
    ece,
    log_loss,
    picp,
    reliability_bins,
    risk_coverage,
    summarize,
)


def test_auc_hand_computed_with_ties():
    # pos 0.35 beats 0.1, loses to 0.4; pos 0.8 beats both -> 3 of 4 pairs = 0.75
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # pos 0.5 beats 0.2 (1) and ties 0.5 (1/2) -> 1.5 / 2 pairs = 0.75
    assert auc([0, 0, 1], [0.2, 0.5, 0.5]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_auc_equals_sklearn_on_tied_random_scores():
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = np.round(rng.random(300), 1)  # coarse rounding creates many ties
        y = (rng.random(300) < p).astype(int)
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_single_class_is_an_error():
    with pytest.raises(ValueError, match="only one class"):
        auc([1, 1, 1], [0.2, 0.5, 0.9])


def test_log_loss_hand_computed_and_clipped():
    # -(ln 0.8 + ln 0.6) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846
    assert log_loss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, abs=1e-7)
    # p = 0 for an up bar is clipped to 1e-15: -ln(1e-15) = 15 ln 10 = 34.5387764
    assert log_loss([1], [0.0]) == pytest.approx(15 * math.log(10))


def test_brier_and_skill_score_hand_computed():
    y, p = [1, 0, 1], [0.8, 0.4, 0.5]
    # (0.2^2 + 0.4^2 + 0.5^2) / 3 = (0.04 + 0.16 + 0.25) / 3 = 0.15
    assert brier(y, p) == pytest.approx(0.15)
    # reference 0.5 forecast: Brier 0.25 -> 1 - 0.15 / 0.25 = 0.4
    assert brier_skill_score(y, p, 0.5) == pytest.approx(0.4)
    # reference 2/3: ((1/3)^2 + (2/3)^2 + (1/3)^2) / 3 = 2/9 -> 1 - 0.15 / (2/9) = 0.325
    assert brier_skill_score(y, p, 2 / 3) == pytest.approx(0.325)


def test_brier_skill_score_of_the_base_rate_itself_is_zero():
    y = np.array([1, 0, 0, 1, 1])
    assert brier_skill_score(y, np.full(5, 0.3), 0.3) == pytest.approx(0.0)


def test_brier_skill_score_undefined_reference_is_an_error():
    with pytest.raises(ValueError, match="base_rate 1.0 forecasts y exactly"):
        brier_skill_score([1, 1], [0.9, 0.8], 1.0)
    with pytest.raises(ValueError, match="base_rate must be probabilities"):
        brier_skill_score([1, 0], [0.9, 0.8], 1.2)


def test_ece_torchmetrics_docstring_example():
    # 2 bins: [0, .5) holds 0.25, 0.25 (acc 0, conf 0.25); [.5, 1) holds 0.55, 0.75, 0.75
    # (acc 1, conf 0.6833): 2/5 * 0.25 + 3/5 * 0.3167 = 0.10 + 0.19 = 0.29
    p = [0.25, 0.25, 0.55, 0.75, 0.75]
    assert ece([0, 0, 1, 1, 1], p, n_bins=2) == pytest.approx(0.29)


def test_ece_puts_p_equal_one_in_its_own_bin():
    # Like torch.bucketize(right=True) - 1: 1.0 is not pooled with 0.6 in [0.5, 1).
    # bins: [0.5,1) {0.6, y=0} gap 0.6; {1.0, y=1} gap 0 -> 1/2 * 0.6 = 0.3
    assert ece([0, 1], [0.6, 1.0], n_bins=2) == pytest.approx(0.3)


def test_ece_matches_torchmetrics_on_random_inputs():
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import binary_calibration_error

    rng = np.random.default_rng(11)
    for n in (1, 37, 500):
        p = rng.random(n)
        p[rng.random(n) < 0.1] = 1.0
        p[rng.random(n) < 0.05] = 0.0
        y = (rng.random(n) < p).astype(int)
        expected = binary_calibration_error(
            torch.tensor(p, dtype=torch.float64), torch.tensor(y), n_bins=15, norm="l1"
        )
        assert ece(y, p, n_bins=15) == pytest.approx(float(expected), abs=1e-12)


def test_ece_rejects_bad_n_bins():
    with pytest.raises(ValueError, match="n_bins must be a positive integer, got 0"):
        ece([0, 1], [0.2, 0.7], n_bins=0)


def test_risk_coverage_hand_computed():
    y, p = [1, 0, 1, 0], [0.9, 0.6, 0.3, 0.45]
    # |2p-1| = [0.8, 0.2, 0.4, 0.1] -> order bars 0, 2, 1, 3
    # predictions p >= .5: [1, 1, 0, 0]; in order: right, wrong, wrong, right
    # cumulative errors 0, 1, 2, 2 over k = 1..4
    coverage, risk = risk_coverage(y, p)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 2 / 3, 0.5])


def test_accuracy_at_coverage_hand_computed():
    y, p = [1, 0, 1, 0], [0.9, 0.6, 0.3, 0.45]
    # n = 4: ceil(0.4) = 1, ceil(0.8) = 1, ceil(2.0) = 2 bars -> 1 - risk[k-1]
    assert accuracy_at_coverage(y, p) == {"0.1": 1.0, "0.2": 1.0, "0.5": 0.5}
    # with a given confidence the order is 3, 1, 2, 0: right, wrong -> 0.5 at 50%
    out = accuracy_at_coverage(y, p, coverages=(0.25, 0.5), confidence=[0.1, 0.5, 0.2, 0.9])
    assert out == {"0.25": 1.0, "0.5": 0.5}


def test_accuracy_at_coverage_ignores_float_noise_in_c_times_n():
    # 0.1 * 30 = 3.0000000000000004 must select 3 bars, not 4; the 4th bar is wrong
    y = np.zeros(30)
    p = np.full(30, 0.45)
    p[:3] = 0.0
    p[3] = 0.9
    assert accuracy_at_coverage(y, p, coverages=(0.1,))["0.1"] == 1.0


def test_accuracy_at_coverage_rejects_bad_coverage():
    with pytest.raises(ValueError, match="coverage must be in \\(0, 1\\], got 1.5"):
        accuracy_at_coverage([0, 1], [0.2, 0.7], coverages=(1.5,))


def test_picp_hand_computed():
    y, mu, sigma = [0.0, 1.0, 2.0, 3.0], np.zeros(4), np.ones(4)
    # level 0.9: z = 1.645 covers |y| in {0, 1} -> 2/4; level 0.5: z = 0.674 covers {0} -> 1/4
    assert picp(y, mu, sigma, 0.9) == pytest.approx(0.5)
    assert picp(y, mu, sigma, 0.5) == pytest.approx(0.25)


def test_picp_of_a_true_gaussian_is_close_to_the_level():
    rng = np.random.default_rng(5)
    sigma = rng.uniform(0.5, 2.0, 100_000)
    y = rng.normal(0.0, sigma)
    for level in (0.5, 0.9):
        # binomial standard error <= sqrt(0.25 / 1e5) = 0.0016
        assert picp(y, np.zeros_like(y), sigma, level) == pytest.approx(level, abs=0.01)


def test_picp_rejects_bad_sigma_and_level():
    with pytest.raises(ValueError, match="sigma must be positive"):
        picp([0.0], [0.0], [0.0], 0.9)
    with pytest.raises(ValueError, match="level must be in \\(0, 1\\), got 1.0"):
        picp([0.0], [0.0], [1.0], 1.0)


def test_summarize_is_json_serializable_plain_floats():
    rng = np.random.default_rng(0)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    out = summarize(y, p, base_rate=0.5)
    assert set(out) == {"auc", "log_loss", "brier", "bss", "ece", "acc_at_coverage"}
    assert all(type(out[k]) is float for k in ("auc", "log_loss", "brier", "bss", "ece"))
    assert set(out["acc_at_coverage"]) == {"0.1", "0.2", "0.5"}
    assert json.loads(json.dumps(out)) == out
    assert out["auc"] > 0.6 and out["bss"] > 0.0


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1], [0.2], "length mismatch"),
        ([0, 1], [0.2, 1.5], "p must be probabilities in \\[0, 1\\], got 1.5 at index 1"),
        ([0, 1], [0.2, float("nan")], "p must be finite, got nan at index 1"),
        ([0, 2], [0.2, 0.3], "y must contain only 0 and 1, got 2.0 at index 1"),
        ([], [], "non-empty 1-D array"),
        ([[0, 1]], [[0.2, 0.3]], "non-empty 1-D array"),
    ],
)
def test_invalid_inputs_are_named(y, p, match):
    with pytest.raises(ValueError, match=match):
        brier(y, p)


def test_reliability_bins_ece_is_ece() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 1.0, 2000)
    y = (rng.uniform(0.0, 1.0, 2000) < p).astype(np.float64)
    p = np.concatenate([p, [0.0, 1.0, 1.0]])
    y = np.concatenate([y, [1.0, 0.0, 1.0]])
    for n_bins in (1, 10, 15):
        assert reliability_bins(y, p, n_bins)[3] == pytest.approx(ece(y, p, n_bins), abs=1e-12)


def test_reliability_bins_worked_example() -> None:
    # Bins of 0.5: [0, 0.5) holds p = 0.2, 0.4 with y = 0, 1; [0.5, 1) holds p = 0.8 with y = 1.
    mean_p, frac_pos, count, value = reliability_bins([0, 1, 1], [0.2, 0.4, 0.8], n_bins=2)
    np.testing.assert_allclose(count, [2, 1, 0])
    np.testing.assert_allclose(mean_p[:2], [0.3, 0.8])
    np.testing.assert_allclose(frac_pos[:2], [0.5, 1.0])
    assert np.isnan(mean_p[2]) and np.isnan(frac_pos[2])
    assert value == pytest.approx(2 / 3 * 0.2 + 1 / 3 * 0.2)
