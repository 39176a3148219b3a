"""Calibration: Platt and isotonic fits, auto selection, JSON round trip, input errors."""

import json

import numpy as np
import pytest
from scipy.special import expit, logit

from levibot_pipelines.core.metrics import brier, log_loss
from levibot_pipelines.core.models.calibration import Calibrator, fit_calibrator


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True P(up) q in [0.2, 0.8]; the forecast triples its logit, so it is overconfident."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.2, 0.8, n)
    y = (rng.random(n) < q).astype(float)
    return expit(3.0 * logit(q)), y


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.2, 0.8, n)
    return q, (rng.random(n) < q).astype(float)


def test_platt_transform_hand_computed():
    # logit(0.75) = ln 3; a = 2, b = 0 -> sigmoid(ln 9) = 9 / 10
    cal = Calibrator(method="platt", a=2.0, b=0.0)
    assert cal.transform([0.75])[0] == pytest.approx(0.9)


def test_platt_recovers_known_parameters():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, 20_000)
    y = (rng.random(p.size) < expit(0.5 * logit(p) - 0.4)).astype(int)
    cal = fit_calibrator(p, y, method="platt")
    assert cal.method == "platt"
    assert cal.a == pytest.approx(0.5, abs=0.05)
    assert cal.b == pytest.approx(-0.4, abs=0.05)


def test_isotonic_hand_computed():
    # PAV on y = [0, 1, 0, 1]: (1, 0) violates order, pooled to 0.5 -> [0, 0.5, 0.5, 1],
    # then clamped to [1/(n+2), 1 - 1/(n+2)] = [1/6, 5/6] -> [1/6, 0.5, 0.5, 5/6]
    cal = fit_calibrator([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], method="isotonic")
    # 0.15 interpolates 1/6 and 0.5 -> 1/3; 0.0 and 1.0 are clipped to the end values
    np.testing.assert_allclose(
        cal.transform([0.0, 0.15, 0.25, 1.0]), [1 / 6, 1 / 3, 0.5, 5 / 6], rtol=1e-12
    )


def test_isotonic_is_monotone_and_bounded():
    p, y = _overconfident(2_000, seed=1)
    cal = fit_calibrator(p, y, method="isotonic")
    out = cal.transform(np.linspace(0.0, 1.0, 1_001))
    assert np.all(np.diff(out) >= 0.0)
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("method", ["platt", "isotonic", "auto"])
def test_calibration_lowers_brier_out_of_sample(method):
    p_fit, y_fit = _overconfident(5_000, seed=2)
    p_test, y_test = _overconfident(5_000, seed=3)
    cal = fit_calibrator(p_fit, y_fit, method=method)
    assert brier(y_test, cal.transform(p_test)) < brier(y_test, p_test)


def test_auto_records_scores_and_picks_the_lowest():
    p, y = _overconfident(4_000, seed=4)
    cal = fit_calibrator(p, y)
    assert set(cal.scores) == {"identity", "platt", "isotonic"}
    assert cal.scores[cal.method] == min(cal.scores.values())
    assert cal.method != "identity"
    assert cal.n_fit == 4_000


def test_auto_on_calibrated_forecasts_stays_close_to_identity():
    # Which method wins is noise here; what is robust: it costs (almost) nothing out of sample.
    p, y = _calibrated(4_000, seed=5)
    p_test, y_test = _calibrated(20_000, seed=6)
    cal = fit_calibrator(p, y)
    assert log_loss(y_test, cal.transform(p_test)) < log_loss(y_test, p_test) + 0.005


def test_auto_with_one_class_in_the_first_half_falls_back_to_identity():
    p = np.array([0.6, 0.7, 0.8, 0.3, 0.6, 0.2])
    y = np.array([1, 1, 1, 0, 1, 0])
    cal = fit_calibrator(p, y)
    assert cal.method == "identity"
    assert list(cal.scores) == ["identity"]
    np.testing.assert_array_equal(cal.transform(p), p)


@pytest.mark.parametrize("method", ["identity", "platt", "isotonic", "auto"])
def test_json_round_trip_gives_identical_transforms(method):
    p, y = _overconfident(1_000, seed=7)
    cal = fit_calibrator(p, y, method=method)
    back = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    grid = np.linspace(0.0, 1.0, 257)
    np.testing.assert_array_equal(back.transform(grid), cal.transform(grid))


def test_fit_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="method must be one of .*got 'beta'"):
        fit_calibrator([0.2, 0.8], [0, 1], method="beta")
    with pytest.raises(ValueError, match="platt calibration needs both classes in y, got only 1"):
        fit_calibrator([0.2, 0.8], [1, 1], method="platt")
    with pytest.raises(ValueError, match="auto calibration needs at least 4 bars, got 3"):
        fit_calibrator([0.2, 0.8, 0.5], [0, 1, 1])
    with pytest.raises(ValueError, match="length mismatch"):
        fit_calibrator([0.2, 0.8, 0.5], [0, 1])
    with pytest.raises(ValueError, match="p must be probabilities in \\[0, 1\\], got -0.1"):
        fit_calibrator([-0.1, 0.8], [0, 1], method="platt")


def test_calibrator_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown Calibrator keys: \\['c'\\]"):
        Calibrator.from_dict({"method": "platt", "c": 1.0})
    with pytest.raises(ValueError, match="isotonic calibrator needs at least one threshold"):
        Calibrator(method="isotonic")
    with pytest.raises(ValueError, match="x_thresholds must be strictly increasing"):
        Calibrator(method="isotonic", x_thresholds=(0.5, 0.2), y_thresholds=(0.1, 0.3))
    with pytest.raises(ValueError, match="p must be finite, got nan"):
        Calibrator().transform([0.5, float("nan")])


def test_isotonic_never_outputs_certainty():
    # The lowest scores are all 0s and the highest all 1s in the calibration window: plain
    # isotonic regression would map them to exactly 0 and 1 (infinite log loss out of sample).
    p = np.linspace(0.3, 0.7, 200)
    y = (p > 0.5).astype(float)
    cal = fit_calibrator(p, y, method="isotonic")
    out = cal.transform(np.array([0.0, 0.3, 0.7, 1.0]))
    assert out[0] == pytest.approx(1 / 202) and out[-1] == pytest.approx(1 - 1 / 202)
