"""The policy stored with the champions, read back by the publisher: which score it trades on,
and FLAT with a reason where none is stored; the reversal rule's calibrated probability."""

import math

import numpy as np
import pytest

from levibot_pipelines.adapters.prediction_files import DECISION_MODELS as PUBLISHABLE
from levibot_pipelines.core.evaluation.decision_walk import DECISION_MODELS
from levibot_pipelines.core.evaluation.rules import reversal_probability, rule_strength
from levibot_pipelines.core.trading.backtest import CostModel
from levibot_pipelines.core.trading.decision import DecisionPolicy, ExpectedReturnMap
from levibot_pipelines.usecases.ensemble import NO_POLICY, engine_inputs, policy_line

COSTS = CostModel(10.0, 2.0)
ROW = {"lgbm_p_up": 0.53, "deep_p_up": 0.56, "ensemble_p_up": 0.55, "deep_epistemic_p": 4e-4}
EMAP = ExpectedReturnMap((0.0, 1.0), (-0.01, 0.01), 500)


def stored(model: str) -> dict:
    policy = DecisionPolicy(model, 16, 5.0, 24.0, 12.0, uncertainty_penalty=1.0)
    return {"policy": policy.to_dict(), "map": EMAP.to_dict(), "n_candidates": 49,
            "reversal_strength": 0.04}  # fmt: skip


def test_rule_strength_and_the_reversal_probability_by_hand():
    # Momentum right on 3 of 4 bars: acc 0.75, strength |2 * 0.75 - 1| = 0.5.
    s = rule_strength(np.array([0.1, -0.1, 0.2, -0.3]), np.array([1.0, 1.0, 1.0, 0.0]))
    assert s == pytest.approx(0.5)
    # After a rise the reversal says down: 0.5 - 0.25; after a fall up: 0.5 + 0.25.
    assert reversal_probability(np.array([0.1, -0.1]), s).tolist() == [0.25, 0.75]


@pytest.mark.parametrize(
    ("model", "score", "uncertainty"),
    [
        ("lgbm", 0.53, None),
        ("deep", 0.56, 0.02),  # sqrt(4e-4): the MC std of the deep P(up)
        ("ensemble", 0.55, 0.02),
        ("reversal", 0.48, None),  # after a rise, strength 0.04: 0.5 - 0.02
    ],
)
def test_the_stored_policy_trades_on_its_models_score(model, score, uncertainty):
    e = engine_inputs(COSTS, {"decision": stored(model)}, ROW, ret_1=0.001)
    assert e.policy.model == model and e.policy.horizon == 16 and e.emap == EMAP
    assert e.score == pytest.approx(score)
    assert e.uncertainty == (None if uncertainty is None else pytest.approx(uncertainty))


def test_without_a_stored_policy_the_publisher_stays_flat_and_says_why():
    e = engine_inputs(COSTS, {"w_lgbm": 0.4}, ROW, ret_1=0.001)  # an ensemble.json of before
    assert e.policy.is_flat and e.policy.reason == NO_POLICY and e.emap is None
    assert e.policy.cost_bps == 24.0 and math.isnan(e.score)


def test_every_decision_model_can_be_published():
    assert set(PUBLISHABLE) == {*DECISION_MODELS, "flat"}


def test_the_policy_line_says_flat_or_what_trades():
    flat = {"policy": {"model": "flat", "reason": "no validated edge after costs"},
            "n_candidates": 49, "candidates_passed": 0, "best": "lgbm@16+0bps",
            "best_t_stat": 1.234}  # fmt: skip
    assert policy_line(flat) == (
        "flat: no validated edge after costs (0 of 49 candidates passed; best lgbm@16+0bps, t=1.23)"
    )
    traded = {**stored("ensemble"), "candidates_passed": 2,
              "test": {"net_return": 0.012, "n_trades": 23}}  # fmt: skip
    assert policy_line(traded) == (
        "ensemble over 16 bars, margin 5 bps (2 of 49 candidates passed); on the test bars: "
        "net +1.20% in 23 trades"
    )
