"""Jobs, the ingest schedule, the feature-rebuild sensor and the staleness alert sensor."""

import json

import dagster as dg

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.defs.common import now_ms, symbol_partitions
from levibot_pipelines.defs.executors import small_job_executor
from levibot_pipelines.defs.resources import AlertResource, Market
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.publish_state import missing_models

OHLCV = dg.AssetKey("ohlcv")
FEATURES = dg.AssetKey("cross_asset_features")
LATEST = dg.AssetKey("latest_predictions")
# The two sensors of the live path are due at every pass of the daemon's sensor loop (which
# runs at most every 5 s): with a 5 s minimum interval a pass that came a moment early skipped
# them, and the rebuild waited 8 s after the last ingest on average (benchmarks/tick_latency.py).
# Each evaluation reads a few run-storage rows and files.
LIVE_SENSOR_INTERVAL_S = 1


def build_automation(s: Settings) -> dg.Definitions:
    """The ingest and feature jobs run their steps in the run's own process on the laptop
    (``in_process_executor``): a step subprocess costs about 20 s of start-up and imports on
    2 cores, for well under a second of work (benchmarks/dagster_jobs.py). On the cluster, on
    the Celery workers (``defs/executors.py``)."""
    partitions = symbol_partitions(s)
    executor = small_job_executor(s)
    ingest_job = dg.define_asset_job(
        "ingest_job",
        selection=dg.AssetSelection.assets(OHLCV),
        partitions_def=partitions,
        description="Incremental ingest of one symbol (one run per partition).",
        executor_def=executor,
    )
    features_job = dg.define_asset_job(
        "features_job",
        selection=dg.AssetSelection.assets(FEATURES),
        description="Rebuild the cross-asset feature table from every symbol's stored bars.",
        executor_def=executor,
    )
    live_job = dg.define_asset_job(
        "features_publish_job",
        selection=dg.AssetSelection.assets(FEATURES)
        | dg.AssetSelection.assets(LATEST).downstream(),
        description="The live tick in one run: rebuild the feature table, then publish on it "
        "(and what hangs off the publish). features_after_ingest launches it once every symbol "
        "has trained models; a second run would cost another worker start (about 6 s).",
        executor_def=executor,
    )
    return dg.Definitions(
        jobs=[ingest_job, features_job, live_job],
        schedules=[_ingest_schedule(s.market.ingest_cron, ingest_job, partitions)],
        sensors=[
            _features_after_ingest(features_job, live_job, partitions),
            feature_freshness_alert,
        ],
    )


def _ingest_schedule(
    cron: str, job, partitions: dg.StaticPartitionsDefinition
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="ingest_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="At every bar close (LEVIBOT_INGEST_CRON): ingest every symbol.",
    )
    def ingest_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        for symbol in partitions.get_partition_keys():
            yield dg.RunRequest(run_key=f"{symbol}@{tick}", partition_key=symbol)

    return ingest_schedule


def _features_after_ingest(
    features_job, live_job, partitions: dg.StaticPartitionsDefinition
) -> dg.SensorDefinition:
    @dg.sensor(
        name="features_after_ingest",
        jobs=[features_job, live_job],
        minimum_interval_seconds=LIVE_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds the feature table once every symbol has landed a new ingest since "
        "the table was last built: one rebuild per ingest tick, not one per symbol. Once every "
        "symbol has trained models the same run also publishes (features_publish_job).",
    )
    def features_after_ingest(context: dg.SensorEvaluationContext, market: Market):
        instance = context.instance
        built = instance.fetch_materializations(FEATURES, limit=1).records
        built_id = built[0].storage_id if built else 0
        latest: dict[str, int] = {}
        for symbol in partitions.get_partition_keys():
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=OHLCV, asset_partitions=[symbol]), limit=1
            ).records
            latest[symbol] = records[0].storage_id if records else 0
        waiting = sorted(sym for sym, sid in latest.items() if sid <= built_id)
        if waiting:
            return dg.SkipReason(f"waiting for a new ingest of {waiting}")
        run_key = ",".join(f"{sym}:{sid}" for sym, sid in sorted(latest.items()))
        s = market.settings
        trained = not missing_models(s.home, s.market.symbols)
        return dg.RunRequest(run_key=run_key, job_name=(live_job if trained else features_job).name)

    return features_after_ingest


@dg.sensor(
    name="feature_freshness_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the feature table's data-time staleness and alerts on every "
    "PASS/WARN/FAIL transition (log, plus LEVIBOT_ALERT_WEBHOOK when set); past "
    "LEVIBOT_KILL_STALENESS_MINUTES it HALTs the kill-switch until data is fresh again.",
)
def feature_freshness_alert(
    context: dg.SensorEvaluationContext, market: Market, alerts: AlertResource
):
    from levibot_pipelines.usecases.monitor import watch_freshness  # heavy: see defs.models

    s = market.settings
    previous = json.loads(context.cursor)["state"] if context.cursor else "PASS"
    watch = watch_freshness(
        s, market.store(), KillSwitch(s.home), previous, now_ms(), "auto:feature_freshness_alert"
    )
    if not watch.changed:
        return dg.SkipReason(
            f"{FEATURES.to_user_string()} {watch.state} (staleness {watch.staleness:.1f} min)"
        )
    delivered = alerts.notify(watch.payload)
    context.update_cursor(json.dumps({"state": watch.state}))
    if watch.state == "PASS":
        context.log.info(watch.message)
    else:
        context.log.warning(watch.message)
    return dg.SkipReason(f"{watch.message}; webhook delivered: {delivered}")


@dg.definitions
def automation() -> dg.Definitions:
    return build_automation(Settings.from_env())
