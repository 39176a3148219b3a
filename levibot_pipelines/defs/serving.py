"""Serving: ``latest_predictions`` (one row per symbol; what services read), its checks, the
publish job, and the sensor that runs it once per feature-table update."""

import json

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.prediction_files import read_latest, refresh_prediction_views
from levibot_pipelines.adapters.prom import push_metrics
from levibot_pipelines.defs.common import (
    WAREHOUSE_POOL,
    markdown_table,
    now_ms,
    refresh_warehouse_views,
)
from levibot_pipelines.defs.executors import small_job_executor
from levibot_pipelines.defs.resources import Models, Trading
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root, data_store
from levibot_pipelines.usecases.publish_state import missing_models, unpublished_symbols

FEATURES = dg.AssetKey("cross_asset_features")
LATEST = dg.AssetKey("latest_predictions")
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
SUMMARY = ("symbol", "bar_time", "signal", "ensemble_p_up", "deep_p_up", "lgbm_p_up", "size")


@dg.asset(
    name="latest_predictions",
    deps=[FEATURES, dg.AssetKey("ensemble_weights")],
    group_name="serving",
    kinds={"parquet", "json"},
    pool=WAREHOUSE_POOL,
    description="One row per symbol on the newest closed bar: Transformer MC dropout, "
    "calibrated LightGBM, ensemble, regime, the decision engine's decision, kill-switch state; "
    "published atomically under $LEVIBOT_HOME/published for the API and other services.",
)
def latest_predictions(
    context: dg.AssetExecutionContext,
    trading: Trading,
    models: Models,
    warehouse: DuckDBResource,
) -> dg.MaterializeResult:
    from levibot_pipelines.usecases.publish import publish_latest  # heavy: see defs.models

    s = trading.settings
    report = publish_latest(s, models.tracker(), now_ms())
    root = data_root(s)  # the home, or LEVIBOT_DATA_URL's bucket
    views = refresh_warehouse_views(warehouse, lambda conn: refresh_prediction_views(conn, root))
    pushed = push_metrics(s.serving.pushgateway_url, read_latest(root), s.market.symbols)
    for note in report.notes:
        context.log.warning(note)
    rows = report.rows
    return dg.MaterializeResult(
        metadata={
            "rows": rows.height,
            "bar_time": dg.MetadataValue.timestamp(int(rows["bar_time"].max()) / 1000),
            "kill_switch": report.kill_switch,
            "predictions": dg.MetadataValue.md(
                markdown_table(rows.select(*SUMMARY, "kill_switch"))
            ),
            "path": dg.MetadataValue.path(str(report.path)),
            "views": dg.MetadataValue.json(views),
            "pushed_to_pushgateway": pushed,
            "notes": dg.MetadataValue.json(report.notes),
        }
    )


def _latest(trading: Trading) -> tuple[Settings, pl.DataFrame]:
    s = trading.settings
    latest = read_latest(data_root(s))
    if latest is None:
        raise ValueError(f"nothing published under {s.market.data_url or s.home}")
    return s, pl.DataFrame(list(latest.rows.values()))


@dg.asset_check(
    asset=LATEST,
    name="every_symbol_published",
    description="ERROR unless there is exactly one published row per configured symbol.",
)
def every_symbol_published(trading: Trading) -> dg.AssetCheckResult:
    s, rows = _latest(trading)
    have = sorted(rows["symbol"].to_list())
    missing = sorted(set(s.market.symbols) - set(have))
    return dg.AssetCheckResult(
        passed=not missing and len(have) == len(s.market.symbols),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"missing": dg.MetadataValue.json(missing), "published": have},
    )


@dg.asset_check(
    asset=LATEST,
    name="bar_time_is_newest_feature_row",
    description="ERROR when a symbol's published bar is not its newest feature row "
    "(a prediction made on old data presented as current).",
)
def bar_time_is_newest_feature_row(trading: Trading) -> dg.AssetCheckResult:
    s, rows = _latest(trading)
    newest = (
        data_store(s)
        .read_features(columns=["symbol", "timestamp"])
        .group_by("symbol")
        .agg(pl.col("timestamp").max().alias("newest_feature_row"))
    )
    joined = rows.select("symbol", "bar_time").join(newest, on="symbol", how="left")
    behind = joined.filter(pl.col("bar_time") != pl.col("newest_feature_row"))
    return dg.AssetCheckResult(
        passed=behind.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"comparison": dg.MetadataValue.md(markdown_table(joined))},
    )


@dg.asset_check(
    asset=LATEST,
    name="probabilities_in_range",
    description="ERROR when any published probability is outside [0, 1] or not finite.",
)
def probabilities_in_range(trading: Trading) -> dg.AssetCheckResult:
    _, rows = _latest(trading)
    cols = ("deep_p_up", "lgbm_p_up", "ensemble_p_up")
    bad = rows.filter(
        pl.any_horizontal([~pl.col(c).is_between(0.0, 1.0) | pl.col(c).is_null() for c in cols])
    )
    return dg.AssetCheckResult(
        passed=bad.is_empty(),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"bad_rows": dg.MetadataValue.md(markdown_table(bad.select("symbol", *cols)))},
    )


def build_publish_job(s: Settings):
    return dg.define_asset_job(
        "publish_job",
        selection=dg.AssetSelection.assets(
            LATEST, "live_scores", "shadow_predictions", "live_recalibration"
        ),
        description="Publish the latest predictions (one row per symbol), then score what "
        "matured (live_scores), run the shadow challengers and the live recalibration.",
        executor_def=small_job_executor(s),  # small steps (defs/executors.py)
    )


@dg.sensor(
    name="publish_on_features",
    job_name="publish_job",
    minimum_interval_seconds=1,  # every pass of the daemon, as features_after_ingest
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs publish_job once per cross_asset_features update that brought a bar "
    "not yet published (features_publish_job publishes in the same run as the rebuild; this "
    "covers the rest). Waits, without consuming the update, while a symbol has no trained "
    "models yet or a features_publish_job run is still to publish.",
)
def publish_on_features(context: dg.SensorEvaluationContext, trading: Trading):
    records = context.instance.fetch_materializations(FEATURES, limit=1).records
    if not records:
        return dg.SkipReason("cross_asset_features has never been materialized")
    storage_id = records[0].storage_id
    seen = json.loads(context.cursor)["storage_id"] if context.cursor else 0
    if storage_id <= seen:
        return dg.SkipReason(f"no feature update since storage id {seen}")
    s = trading.settings
    missing = missing_models(s.home, s.market.symbols)
    if missing:
        return dg.SkipReason(f"no trained models yet for {missing}: run training_job")
    live = dg.RunsFilter(job_name="features_publish_job", statuses=IN_PROGRESS)
    if context.instance.get_runs_count(live):
        return dg.SkipReason("a features_publish_job run is publishing: waiting for it")
    context.update_cursor(json.dumps({"storage_id": storage_id}))
    if not unpublished_symbols(s.home, s.market.symbols, data_root(s)):
        return dg.SkipReason(
            f"feature update {storage_id} brought no new bar: every symbol's newest bar is "
            "already published"
        )
    return dg.RunRequest(run_key=f"features:{storage_id}")


@dg.definitions
def serving() -> dg.Definitions:
    return dg.Definitions(
        assets=[latest_predictions],
        asset_checks=[
            every_symbol_published,
            bar_time_is_newest_feature_row,
            probabilities_in_range,
        ],
        jobs=[build_publish_job(Settings.from_env())],
        sensors=[publish_on_features],
    )
