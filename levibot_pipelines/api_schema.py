"""Response models of the HTTP API (``levibot_pipelines.api``); they make its OpenAPI docs."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Uncertainty(BaseModel):
    total: float = Field(description="predictive std of the log return, sqrt(aleatoric+epistemic)")
    aleatoric: float = Field(description="mean sigma^2 over MC draws (log-return^2)")
    epistemic: float = Field(description="variance of mu over MC draws (log-return^2)")
    epistemic_p: float = Field(description="variance of P(up) over MC draws")


class Prediction(BaseModel):
    symbol: str
    model_type: str
    p_up: float = Field(description="calibrated P(close(t+h) > close(t))")
    mu: float | None = Field(description="expected log return close(t) -> close(t+h)")
    uncertainty: Uncertainty | None
    confidence: float
    signal: str = Field(description="ENTRY_LONG | ENTRY_SHORT | EXIT | HOLD at the close of t")
    mc_samples: int | None
    as_of: str = Field(description="ISO UTC close time of bar t (the decision time)")
    bar_time: int = Field(description="open time of bar t, ms UTC")
    model_version: str
    stale: bool
    staleness_minutes: float
    source: str
    published_at: str
    size: float
    position: float
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
    uncertainty_source: str = "deep"
