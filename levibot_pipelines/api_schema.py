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
