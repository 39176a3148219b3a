"""Jobs, the ingest schedule, the feature-rebuild sensor and the staleness alert sensor."""

import json

import dagster as dg

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.core.data.timeframes import freshness_state, staleness_minutes
from levibot_pipelines.core.trading.killswitch import RiskInputs
from levibot_pipelines.defs.market import now_ms, symbol_partitions
from levibot_pipelines.defs.resources import AlertResource, Market
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.risk import evaluate_kill_switch, risk_limits

OHLCV = dg.AssetKey("ohlcv")
FEATURES = dg.AssetKey("cross_asset_features")


def build_automation(s: Settings) -> dg.Definitions:
    partitions = symbol_partitions(s)
    ingest_job = dg.define_asset_job(
        "ingest_job",
        selection=dg.AssetSelection.assets(OHLCV),
        partitions_def=partitions,
        description="Incremental ingest of one symbol (one run per partition).",
    )
    features_job = dg.define_asset_job(
        "features_job",
        selection=dg.AssetSelection.assets(FEATURES),
        description="Rebuild the cross-asset feature table from every symbol's stored bars.",
    )

    @dg.schedule(
        name="ingest_schedule",
        cron_schedule=s.market.ingest_cron,
        execution_timezone="UTC",
        job=ingest_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 15 minutes, one minute after the bar close: ingest every symbol.",
    )
    def ingest_schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time.isoformat()
        for symbol in partitions.get_partition_keys():
            yield dg.RunRequest(run_key=f"{symbol}@{tick}", partition_key=symbol)

    @dg.sensor(
        name="features_after_ingest",
        job=features_job,
        minimum_interval_seconds=20,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Rebuilds the feature table once every symbol has landed a new ingest since "
        "the table was last built: one rebuild per ingest tick, not one per symbol.",
    )
    def features_after_ingest(context: dg.SensorEvaluationContext):
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
        return dg.RunRequest(run_key=run_key)

    @dg.sensor(
        name="feature_freshness_alert",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Watches the feature table's data-time staleness and alerts on every "
        "PASS/WARN/FAIL transition (log, plus LEVIBOT_ALERT_WEBHOOK when set); past "
        "LEVIBOT_KILL_STALENESS_MINUTES it HALTs the kill-switch until data is fresh again.",
    )
    def feature_freshness_alert(
        context: dg.SensorEvaluationContext,
        market: Market,
        alerts: AlertResource,
    ):
        settings, limits = market.settings, market.settings.alerts
        last = market.store().features_last_timestamp()
        now = now_ms()
        stale = staleness_minutes(last, now, settings.market.timeframe_ms)
        evaluate_kill_switch(
            KillSwitch(settings.home),
            RiskInputs(staleness_minutes=stale, staleness_subject=FEATURES.to_user_string()),
            risk_limits(settings),
            by="auto:feature_freshness_alert",
            now_ms=now,
        )
        state = freshness_state(stale, limits.max_staleness_minutes, limits.fail_staleness_minutes)
        previous = json.loads(context.cursor)["state"] if context.cursor else "PASS"
        if state == previous:
            return dg.SkipReason(f"cross_asset_features {state} (staleness {stale:.1f} min)")
        message = (
            f"cross_asset_features freshness {previous} -> {state}: staleness {stale:.1f} min "
            f"(warn > {limits.max_staleness_minutes}, fail > {limits.fail_staleness_minutes})"
        )
        delivered = alerts.notify(
            {
                "asset": FEATURES.to_user_string(),
                "state": state,
                "previous_state": previous,
                "staleness_minutes": None if last is None else stale,
                "last_bar_ms": last,
                "message": message,
            }
        )
        context.update_cursor(json.dumps({"state": state}))
        if state == "PASS":
            context.log.info(message)
        else:
            context.log.warning(message)
        return dg.SkipReason(f"{message}; webhook delivered: {delivered}")

    return dg.Definitions(
        jobs=[ingest_job, features_job],
        schedules=[ingest_schedule],
        sensors=[features_after_ingest, feature_freshness_alert],
    )


@dg.definitions
def automation() -> dg.Definitions:
    return build_automation(Settings.from_env())
