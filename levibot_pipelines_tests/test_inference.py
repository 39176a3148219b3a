"""The one inference path (``core.models.inference``): hand-computed values, and agreement with
the model's own MC pass it wraps."""

import numpy as np
import pytest
import torch

from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.ensemble import combine
from levibot_pipelines.core.models.inference import (
    TRANSFORMER_KEYS,
    calibrated_outputs,
    ensemble_outputs,
    margin,
    transformer_confidence,
    transformer_outputs,
)
from levibot_pipelines.core.models.transformer import LevibotTransformer, TransformerConfig
from levibot_pipelines.core.models.transformer_training import predict

TINY = TransformerConfig(n_features=10, window=8, d_model=8, n_heads=2, n_layers=1, d_ff=16)


def test_margin_and_deep_confidence_by_hand():
    np.testing.assert_allclose(margin(np.array([0.5, 0.8, 0.1])), [0.0, 0.6, 0.8])
    # std_p = 0.1 -> shrink 0.8; std_p = 0.3 -> shrink 0.4; std_p = 0.5 -> 0.
    got = transformer_confidence(np.array([0.8, 0.8, 0.8]), np.array([0.01, 0.09, 0.25]))
    np.testing.assert_allclose(got, [0.6 * 0.8, 0.6 * 0.4, 0.0], atol=1e-15)


def test_calibrated_outputs_by_hand():
    mc = {
        "p_up": np.array([0.6, 0.3]),
        "mu": np.array([0.001, -0.002]),
        "aleatoric": np.array([0.0003, 0.0005]),
        "epistemic": np.array([0.0001, 0.0004]),
        "epistemic_p": np.array([0.0004, 0.01]),
        "total": np.array([0.0004, 0.0009]),
        "confidence": np.array([9.0, 9.0]),  # raw-p confidence: replaced, never passed on
    }
    out = calibrated_outputs(mc, Calibrator())  # identity calibration
    assert set(out) == set(TRANSFORMER_KEYS)
    np.testing.assert_allclose(out["p_up"], [0.6, 0.3])
    np.testing.assert_allclose(out["sigma"], [0.02, 0.03])
    # |2p - 1| * (1 - 2 sqrt(epistemic_p)): 0.2 * 0.96, 0.4 * 0.8
    np.testing.assert_allclose(out["confidence"], [0.192, 0.32])
    platt = calibrated_outputs(mc, Calibrator(method="platt", a=1.0, b=np.log(2.0)))
    # odds doubled: 0.6 -> 0.75, 0.3 -> 6/13
    np.testing.assert_allclose(platt["p_up"], [0.75, 6 / 13])


def test_ensemble_outputs_by_hand():
    p, conf, w_bar = ensemble_outputs(
        np.array([0.6]), np.array([0.9]), np.array([0.2]), np.array([0.3]), 0.25
    )
    # w_t = 0.25 * 0.9 / (0.25 * 0.9 + 0.75 * 0.3) = 0.5 -> p = 0.4, |2p - 1| = 0.2
    assert w_bar[0] == pytest.approx(0.5, abs=1e-6)
    assert p[0] == pytest.approx(0.4, abs=1e-6) and conf[0] == pytest.approx(0.2, abs=1e-6)
    np.testing.assert_array_equal(p, combine([0.6], [0.2], 0.25, [0.9], [0.3]))


def test_transformer_outputs_are_the_models_mc_pass_calibrated():
    torch.manual_seed(0)
    model = LevibotTransformer(TINY)
    X = np.random.default_rng(1).standard_normal((40, TINY.n_features)).astype(np.float32)
    ends = np.array([10, 25, 39])
    cal = Calibrator(method="platt", a=1.5, b=-0.1)
    out = transformer_outputs(model, cal, X, ends, n_samples=6, seed=3)
    mc = predict(model, X, ends, n_samples=6, seed=3)
    np.testing.assert_array_equal(out["p_up"], cal.transform(mc["p_up"]))
    for k in ("mu", "aleatoric", "epistemic", "epistemic_p", "total"):
        np.testing.assert_array_equal(out[k], mc[k])
    np.testing.assert_array_equal(out["sigma"], np.sqrt(mc["aleatoric"] + mc["epistemic"]))
    np.testing.assert_array_equal(
        out["confidence"], transformer_confidence(out["p_up"], mc["epistemic_p"])
    )
    with pytest.raises(ValueError, match="n_samples must be >= 1"):
        transformer_outputs(model, cal, X, ends, n_samples=0, seed=3)
