"""Feature drift: PSI of each model feature over the recent bars against the champion model's
training window, as an asset check on ``cross_asset_features``. The check only observes: the
kill-switch's drift trigger is set by the publisher (``usecases.risk``), from the same
computation (``usecases.monitor.feature_drift``)."""

import dagster as dg
import polars as pl

from levibot_pipelines.core.trading.drift import SPREAD_MARGIN
from levibot_pipelines.core.trading.killswitch import RiskInputs, automatic_triggers
from levibot_pipelines.defs.common import markdown_table
from levibot_pipelines.defs.resources import Models
from levibot_pipelines.usecases.data_home import data_store
from levibot_pipelines.usecases.risk import risk_limits


@dg.asset_check(
    asset="cross_asset_features",
    name="feature_drift",
    description="PSI of each model feature, newest LEVIBOT_DRIFT_WINDOW bars vs the champion's "
    "training window, per symbol, judged against its in-training spread (psi_in_training: the "
    "largest PSI of a same-length window inside the training window). Passes while every PSI "
    f"is at most LEVIBOT_PSI_WARN (0.1) or within {SPREAD_MARGIN} x its spread; ERROR when one "
    f"is above LEVIBOT_PSI_ERROR (0.25) and beyond {SPREAD_MARGIN} x its spread (a shock); WARN "
    "otherwise. One rule with the kill-switch (core.trading.drift.drift_level): an ERROR here "
    "sets its drift trigger (REDUCING) at the next publish; the check itself changes nothing.",
)
def feature_drift(context: dg.AssetCheckExecutionContext, models: Models) -> dg.AssetCheckResult:
    from levibot_pipelines.usecases.monitor import feature_drift as compute_drift  # heavy

    s = models.settings
    features = data_store(s).read_features()
    drift = compute_drift(s, models.tracker(), features)
    inputs = RiskInputs(drift_worst=drift.worst, drift_alarm=drift.alarm)
    trigger, _ = automatic_triggers(inputs, risk_limits(s))["drift"]
    report, worst = drift.report, drift.worst
    flagged = report.filter(pl.col("level") != "ok").sort("psi", descending=True)
    verdict = "ok: every PSI within its in-training spread or at most LEVIBOT_PSI_WARN"
    if drift.level != "ok":
        top = flagged.filter(pl.col("level") == drift.level).row(0, named=True)  # at ERROR: alarm
        verdict = (
            f"{drift.level}: PSI {top['psi']:.3f} on {top['feature']} ({top['symbol']}), "
            f"in training at most {top['psi_in_training']:.3f}"
        )
        context.log.warning(f"feature drift {verdict}")
    return dg.AssetCheckResult(
        passed=drift.level == "ok",
        severity=dg.AssetCheckSeverity.ERROR
        if drift.level == "error"
        else dg.AssetCheckSeverity.WARN,
        metadata={
            "verdict": verdict,
            "max_psi": worst.psi,
            "worst": f"PSI {worst.psi:.3f} on {worst.feature} ({worst.symbol})",
            "beyond_training": int(report["beyond_training"].sum()),
            "kill_switch_trigger": trigger or "none",
            "flagged": dg.MetadataValue.md(markdown_table(flagged.head(30))),
            "reference": dg.MetadataValue.json(drift.reference),
            "recent_bars": s.trading.drift_window,
            "psi_by_symbol_feature": dg.MetadataValue.md(
                markdown_table(
                    report.pivot(on="symbol", index="feature", values="psi").sort("feature")
                )
            ),
            "psi_in_training_by_symbol_feature": dg.MetadataValue.md(
                markdown_table(
                    report.pivot(on="symbol", index="feature", values="psi_in_training").sort(
                        "feature"
                    )
                )
            ),
        },
    )


@dg.definitions
def monitoring() -> dg.Definitions:
    return dg.Definitions(asset_checks=[feature_drift])
