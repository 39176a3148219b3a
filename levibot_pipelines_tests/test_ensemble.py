"""Ensemble of two calibrated forecasts: weight fit, confidence weighting, input errors."""

import numpy as np
import pytest

from levibot_pipelines.core.models.ensemble import combine, fit_ensemble_weight

RNG_SEED = 9


def _members(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An informative calibrated member, an uninformative noise member, and the outcomes."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.1, 0.9, n)
    y = (rng.random(n) < q).astype(int)
    return q, rng.uniform(0.1, 0.9, n), y


def test_extreme_weights_return_one_member():
    rng = np.random.default_rng(RNG_SEED)
    p_a, p_b, ca, cb = rng.random((4, 50))
    np.testing.assert_array_equal(combine(p_a, p_b, 1.0), p_a)
    np.testing.assert_array_equal(combine(p_a, p_b, 0.0), p_b)
    np.testing.assert_allclose(combine(p_a, p_b, 1.0, ca, cb), p_a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(combine(p_a, p_b, 0.0, ca, cb), p_b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.5, 0.77, 1.0])
def test_output_lies_between_the_members(w):
    rng = np.random.default_rng(RNG_SEED)
    p_a, p_b, ca, cb = rng.random((4, 200))
    lo, hi = np.minimum(p_a, p_b), np.maximum(p_a, p_b)
    for out in (combine(p_a, p_b, w), combine(p_a, p_b, w, ca, cb)):
        assert np.all(out >= lo - 1e-15) and np.all(out <= hi + 1e-15)


def test_equal_confidences_give_the_plain_mix():
    rng = np.random.default_rng(RNG_SEED)
    p_a, p_b, conf = rng.random((3, 100))
    np.testing.assert_allclose(combine(p_a, p_b, 0.3, conf, conf), 0.3 * p_a + 0.7 * p_b)


def test_confidence_weight_hand_computed():
    # w = 0.25, conf_a = 0.9, conf_b = 0.3 (eps ~ 0):
    # w_t = 0.25 * 0.9 / (0.25 * 0.9 + 0.75 * 0.3) = 0.225 / 0.45 = 0.5
    # p = 0.5 * 0.6 + 0.5 * 0.2 = 0.4
    assert combine([0.6], [0.2], 0.25, [0.9], [0.3])[0] == pytest.approx(0.4, abs=1e-6)
    # w = 0.5, conf_a = 0.8, conf_b = 0.2: w_t = 0.4 / (0.4 + 0.1) = 0.8
    # p = 0.8 * 0.7 + 0.2 * 0.4 = 0.56 + 0.08 = 0.64
    assert combine([0.7], [0.4], 0.5, [0.8], [0.2])[0] == pytest.approx(0.64, abs=1e-6)


def test_zero_confidences_fall_back_to_the_global_weight():
    # both conf 0: w_t = w * eps / (w * eps + (1 - w) * eps) = w = 0.25 -> 0.25 * 1 + 0.75 * 0
    assert combine([1.0], [0.0], 0.25, [0.0], [0.0])[0] == pytest.approx(0.25)


def test_fitted_weight_hand_computed():
    # p_a is right and sharper than p_b = 0.5 on both bars, so loss falls monotonically in w
    assert fit_ensemble_weight([0.9, 0.1], [0.5, 0.5], [1, 0]) == 1.0
    # identical members: the Transformer is not better, so LightGBM alone; without the gate
    # every w ties and the smallest grid point wins
    assert fit_ensemble_weight([0.6, 0.3], [0.6, 0.3], [1, 0], grid=3) == 1.0
    assert (
        fit_ensemble_weight([0.6, 0.3], [0.6, 0.3], [1, 0], grid=3, admit_b_if_better=False) == 0.0
    )


def test_the_transformer_is_admitted_only_where_it_beats_lightgbm_on_validation():
    # By hand, y = (1, 0): LightGBM a = (0.6, 0.45) loses -(ln 0.6 + ln 0.55)/2 = 0.554, the
    # Transformer b = (0.3, 0.05) -(ln 0.3 + ln 0.95)/2 = 0.628: worse alone, so not admitted,
    # although a mix would lose less than a alone (w = 0.5: (0.45, 0.25), loss 0.543).
    a, b, y = [0.6, 0.45], [0.3, 0.05], [1, 0]
    assert fit_ensemble_weight(a, b, y) == 1.0
    assert fit_ensemble_weight(a, b, y, admit_b_if_better=False) < 1.0
    # Swapped, the better member is the Transformer: admitted, and it takes most of the weight.
    assert fit_ensemble_weight(b, a, y) < 0.5


def test_fitted_weight_picks_the_informative_member():
    informative, noise, y = _members(5_000, seed=1)
    assert fit_ensemble_weight(informative, noise, y) >= 0.9
    assert fit_ensemble_weight(noise, informative, y) <= 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"w": 1.5}, "w must be in \\[0, 1\\], got 1.5"),
        ({"w": float("nan")}, "w must be in \\[0, 1\\], got nan"),
        ({"w": 0.5, "conf_a": [0.5, 0.5]}, "given together, conf_b is None"),
        ({"w": 0.5, "conf_a": [0.5, 0.5], "conf_b": [0.5, 1.2]}, "conf_b must be probabilities"),
        ({"w": 0.5, "conf_a": [0.5], "conf_b": [0.5]}, "length mismatch"),
        ({"w": 0.5, "conf_a": [0.5, 0.5], "conf_b": [0.5, 0.5], "eps": 0.0}, "eps must be"),
    ],
)
def test_combine_errors_name_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        combine([0.2, 0.7], [0.4, 0.6], **kwargs)


def test_fit_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="grid must be an integer >= 2, got 1"):
        fit_ensemble_weight([0.2], [0.3], [1], grid=1)
    with pytest.raises(ValueError, match="length mismatch"):
        fit_ensemble_weight([0.2, 0.4], [0.3], [1, 0])
    with pytest.raises(ValueError, match="p_a must be probabilities in \\[0, 1\\], got 1.1"):
        fit_ensemble_weight([1.1], [0.3], [1])
