"""Checks on the model assets (``predictions_valid`` on each model's test predictions,
``calibration_and_skill`` on ``model_report``), the ``training_job`` and its schedule."""

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.home import predictions_path, report_key
from levibot_pipelines.adapters.object_store import read_json
from levibot_pipelines.defs.common import symbol_partitions
from levibot_pipelines.defs.models import MODEL_ASSETS
from levibot_pipelines.defs.resources import Models
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root

SKILL_MODELS = ("lgbm", "deep", "ensemble")


def _predictions_check(
    asset: str, kind: str, partitions: dg.PartitionsDefinition
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="predictions_valid",
        partitions_def=partitions,
        blocking=True,
        description="ERROR when the test-window predictions contain NaN or are constant "
        "(a model that says nothing).",
    )
    def predictions_valid(
        context: dg.AssetCheckExecutionContext, models: Models
    ) -> dg.AssetCheckResult:
        path = predictions_path(models.settings.home, context.partition_key, kind)
        p = pl.read_parquet(path).get_column("p")
        n_nan = int(p.is_nan().sum() + p.null_count())
        spread = float(p.max() - p.min()) if n_nan == 0 else float("nan")
        return dg.AssetCheckResult(
            passed=n_nan == 0 and spread > 1e-9,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"nan": n_nan, "spread": spread, "n": p.len()},
        )

    return predictions_valid


# Log-loss differences below this (nats per bar) are noise at report sizes: an ensemble of two
# near-coin-flip members differs from the better one by ~1e-4 on a few hundred bars.
ENSEMBLE_LOG_LOSS_TOLERANCE = 1e-3


def skill_problems(models: dict[str, dict]) -> list[str]:
    """What ``calibration_and_skill`` warns about in a report's per-model metrics."""
    problems = [
        f"{n}: ECE {models[n]['ece']:.4f} > 0.02" for n in SKILL_MODELS if models[n]["ece"] > 0.02
    ]
    problems += [
        f"{n}: BSS {models[n]['bss']:+.4f} < 0" for n in SKILL_MODELS if models[n]["bss"] < 0
    ]
    best = min(models["lgbm"]["log_loss"], models["deep"]["log_loss"])
    if models["ensemble"]["log_loss"] > best + ENSEMBLE_LOG_LOSS_TOLERANCE:
        problems.append(
            f"ensemble log loss {models['ensemble']['log_loss']:.5f} > best member {best:.5f}"
        )
    return problems


def _skill_check(partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset="model_report",
        name="calibration_and_skill",
        partitions_def=partitions,
        description="WARN when a model's ECE > 0.02, its Brier skill score < 0, or the "
        "ensemble's log loss exceeds its best member's by more than 0.001 (smaller differences "
        "are noise at report sizes).",
    )
    def calibration_and_skill(
        context: dg.AssetCheckExecutionContext, models: Models
    ) -> dg.AssetCheckResult:
        symbol, s = context.partition_key, models.settings
        report = read_json(data_root(s), report_key(symbol))
        if report is None:
            raise FileNotFoundError(f"no report.json of {symbol}: materialize model_report")
        problems = skill_problems(report["symbols"][symbol]["models"])
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"problems": dg.MetadataValue.json(problems)},
        )

    return calibration_and_skill


def build_model_checks(s: Settings) -> list[dg.AssetChecksDefinition]:
    partitions = symbol_partitions(s)
    checks = [
        _predictions_check(asset, kind, partitions)
        for asset, kind in (("lgbm_model", "lgbm"), ("deep_tfm_model", "deep"))
    ]
    return [*checks, _skill_check(partitions)]


def build_training_automation(s: Settings) -> dg.Definitions:
    partitions = symbol_partitions(s)
    training_job = dg.define_asset_job(
        "training_job",
        selection=dg.AssetSelection.assets(*MODEL_ASSETS),
        partitions_def=partitions,
        description="Retrain, evaluate and register one symbol.",
    )

    @dg.schedule(
        name="retrain_schedule",
        cron_schedule=s.models.retrain_cron,
        execution_timezone=s.models.retrain_timezone,
        job=training_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Retrain every symbol (LEVIBOT_RETRAIN_CRON, default daily 00:30).",
    )
    def retrain_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        for symbol in partitions.get_partition_keys():
            yield dg.RunRequest(run_key=f"retrain-{symbol}@{tick}", partition_key=symbol)

    return dg.Definitions(jobs=[training_job], schedules=[retrain_schedule])


@dg.definitions
def model_checks() -> dg.Definitions:
    s = Settings.from_env()
    return dg.Definitions.merge(
        dg.Definitions(asset_checks=build_model_checks(s)), build_training_automation(s)
    )
