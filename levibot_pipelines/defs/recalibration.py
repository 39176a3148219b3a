"""Live recalibration: ``live_recalibration`` (in ``publish_job`` after ``live_scores``), the
Platt maps refitted on matured live predictions, judged in a shadow period and applied by the
publisher once active (``usecases.recalibration``), and its ``calibration_drift`` check. The
use case and the state reader are imported in the bodies (MLflow, scikit-learn: see
``defs.models``)."""

import dagster as dg
import polars as pl

from levibot_pipelines.defs.common import markdown_table, now_ms
from levibot_pipelines.defs.resources import Models, Trading

LIVE = dg.AssetKey("live_scores")
RECAL = dg.AssetKey("live_recalibration")
DRIFT_COLUMNS = ("symbol", "model", "bars", "max_abs_shift", "deviance", "threshold", "drifted")


@dg.asset(
    name="live_recalibration",
    deps=[LIVE],
    group_name="serving",
    kinds={"json", "mlflow"},
    description="Live recalibration: per symbol and model a Platt map from the model's P(up) "
    "to the realised frequency, fitted on the newest LEVIBOT_RECAL_MIN_BARS matured live bars "
    "at most once per LEVIBOT_RECAL_INTERVAL_HOURS; a candidate is scored as recal_{model} on "
    "the next LEVIBOT_RECAL_SHADOW_BARS bars that mature after its fit and becomes active (the "
    "publisher applies it to the published P(up)) when its mean paired log loss is no worse "
    "than the published probability's, else rejected. State and history in "
    "$LEVIBOT_HOME/live/recalibration.json; every fit and stage change is an MLflow run.",
)
def live_recalibration(
    context: dg.AssetExecutionContext, trading: Trading, models: Models
) -> dg.MaterializeResult:
    from levibot_pipelines.usecases.recalibration import recal_config, recalibrate

    s = trading.settings
    res = recalibrate(s.home, models.tracker(), recal_config(s), now_ms())
    for note in res.notes:
        context.log.info(note)
    return dg.MaterializeResult(
        metadata={
            "maps": dg.MetadataValue.md(markdown_table(res.table)),
            "fitted": dg.MetadataValue.json(res.fitted),
            "stage_changes": dg.MetadataValue.json(res.changes),
            "drifted": dg.MetadataValue.json(res.drifted),
            "missing_bars": dg.MetadataValue.json(
                {
                    f"{r['symbol']}/{r['model']}": r["missing"]
                    for r in res.table.iter_rows(named=True)
                }
            ),
            "notes": dg.MetadataValue.json(res.notes),
            "path": dg.MetadataValue.path(str(res.path)),
        }
    )


@dg.asset_check(
    asset=RECAL,
    name="calibration_drift",
    description="WARN when what is published has drifted from calibrated: a Platt map from the "
    "published P(up) to the realised direction, fitted on the newest LEVIBOT_RECAL_MIN_BARS "
    "matured bars, beats the identity by a likelihood-ratio statistic D with D / horizon > "
    "13.82 (chi-square, 2 degrees of freedom, 0.1%; core.evaluation.recalibration). The gauge "
    "levibot_live_calibration_drift is the map's largest shift of a published probability.",
)
def calibration_drift(trading: Trading) -> dg.AssetCheckResult:
    from levibot_pipelines.adapters.recal_files import read_state

    s = trading.settings
    drift = read_state(s.home)["drift"]
    rows = [
        {"symbol": sym, "model": m, **{k: d.get(k) for k in DRIFT_COLUMNS[2:]}}
        for sym, models in drift.items()
        if sym in s.market.symbols
        for m, d in models.items()
        if d.get("max_abs_shift") is not None
    ]
    drifted = [r for r in rows if r["drifted"]]
    table = pl.DataFrame(rows, schema=dict.fromkeys(DRIFT_COLUMNS, pl.String) | _TYPES)
    return dg.AssetCheckResult(
        passed=not drifted,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "probed": len(rows),
            "drifted": dg.MetadataValue.json([f"{r['symbol']}/{r['model']}" for r in drifted]),
            "probes": dg.MetadataValue.md(markdown_table(table) if rows else "none yet"),
        },
    )


_TYPES = {
    "bars": pl.Int64,
    "max_abs_shift": pl.Float64,
    "deviance": pl.Float64,
    "threshold": pl.Float64,
    "drifted": pl.Boolean,
}


@dg.definitions
def recalibration() -> dg.Definitions:
    return dg.Definitions(assets=[live_recalibration], asset_checks=[calibration_drift])
