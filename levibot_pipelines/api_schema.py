"""Response models of the HTTP API (``levibot_pipelines.api``); they make its OpenAPI docs.

The seed's contract: ``uncertainty`` is a number (the total predictive std) and ``signal`` is in
the seed's vocabulary ``ENTRY`` / ``EXIT`` / ``HOLD``; the richer parts are added fields
(``uncertainty_parts``, ``side``). The published files keep ``ENTRY_LONG`` / ``ENTRY_SHORT``;
``api_responses.seed_signal`` maps them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SeedSignal = Literal["ENTRY", "EXIT", "HOLD"]
Side = Literal["long", "short"]
UncertaintySource = Literal["deep", "blend", "lgbm"]
DecisionModel = Literal["lgbm", "deep", "ensemble", "reversal", "flat"]


class UncertaintyParts(BaseModel):
    total: float = Field(description="predictive std of the log return, sqrt(aleatoric+epistemic)")
    aleatoric: float = Field(description="mean sigma^2 over MC draws (log-return^2)")
    epistemic: float = Field(description="variance of mu over MC draws (log-return^2)")
    epistemic_p: float = Field(description="variance of P(up) over MC draws")


class Prediction(BaseModel):
    symbol: str
    model_type: str
    p_up: float = Field(description="calibrated P(close(t+h) > close(t))")
    mu: float | None = Field(description="expected log return close(t) -> close(t+h)")
    uncertainty: float | None = Field(
        description="total predictive std of the log return close(t) -> close(t+h) from the "
        "Transformer's MC dropout, sqrt(aleatoric + epistemic) (the same number as "
        "uncertainty_parts.total); null on /ml/predict (LightGBM has no uncertainty estimate)"
    )
    uncertainty_parts: UncertaintyParts | None = Field(
        description="the split of uncertainty; null where uncertainty is null"
    )
    confidence: float
    signal: SeedSignal = Field(
        description="ENTRY | EXIT | HOLD at the close of t (the side is in side); published as "
        "ENTRY_LONG / ENTRY_SHORT / EXIT / HOLD"
    )
    side: Side | None = Field(
        description="ENTRY: the side opened; EXIT: the side of the position it closes (null when "
        "no earlier published bar says); HOLD: the side held, null when flat"
    )
    mc_samples: int | None
    as_of: str = Field(description="ISO UTC close time of bar t (the decision time)")
    bar_time: int = Field(description="open time of bar t, ms UTC")
    model_version: str
    stale: bool
    staleness_minutes: float
    source: str
    published_at: str
    size: float
    position: float = Field(
        description="signed size held once the decision is filled (+ long, - short, 0 flat)"
    )
    stop_loss: float | None
    take_profit: float | None
    regime: str
    kill_switch: str = Field(
        description="live state (kill_switch.json), else as published; HALTED while the bar is "
        "staler than the kill staleness limit"
    )
    kill_switch_reason: str
    kill_switch_applied: bool = Field(
        description="true when the live kill-switch is stricter than at publish time and the "
        "published entry was cut here (HALTED: no entry; REDUCING: size x reducing factor)"
    )
    decision_model: DecisionModel = Field(
        description="the model the published decision policy trades on (chosen with the "
        "champions on validation and calibration bars); flat: no validated edge, never trades"
    )
    horizon: int | None = Field(
        description="bars a position of the decision policy is held at least (the horizon its "
        "expected return is for); null for the flat policy"
    )
    expected_net_return: float | None = Field(
        description="expected return of an entry at the close of t over horizon bars, from the "
        "fill at open(t+1), after the round-trip fees and slippage and the uncertainty penalty, "
        "as a fraction of notional (0.0012 = 12 bps); null for the flat policy or without a score"
    )
    reason: str = Field(
        description="why the signal is what it is, e.g. 'no validated edge after costs' or "
        "'entry: expected net +12.3 bps over 16 bars'"
    )


class DeepPrediction(Prediction):
    recomputed: bool = Field(description="true when MC dropout was rerun for n_samples")


class EnsemblePrediction(Prediction):
    w_lgbm: float = Field(description="effective LightGBM weight on this bar")
    uncertainty_source: UncertaintySource = Field(
        description="which members the served p_up rests on, by the effective weight: deep "
        "(w_lgbm = 0), blend (0 < w_lgbm < 1), lgbm (w_lgbm = 1). uncertainty is always the "
        "Transformer member's predictive std (LightGBM has none): with lgbm it does not come "
        "from the model behind p_up"
    )
