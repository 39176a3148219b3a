"""The ``stuck_run_alert`` sensor: alerts once on each run STARTED for longer than
``LEVIBOT_MAX_RUN_MINUTES``. Runs whose worker died are failed by Dagster's run monitoring
(see ``defs/run_launcher.py`` and ``dagster.yaml``); this sensor covers the live but hung ones."""

import json
import time

import dagster as dg

from levibot_pipelines.defs.resources import AlertResource, Market
from levibot_pipelines.usecases.run_watch import StartedRun, watch_started_runs


@dg.sensor(
    name="stuck_run_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once (log, plus LEVIBOT_ALERT_WEBHOOK when set) on every run that has "
    "been STARTED for longer than LEVIBOT_MAX_RUN_MINUTES. A run whose worker process died is "
    "marked FAILURE by run monitoring instead, which also frees its pool slots.",
)
def stuck_run_alert(context: dg.SensorEvaluationContext, market: Market, alerts: AlertResource):
    limit = market.settings.alerts.max_run_minutes
    records = context.instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
    )
    runs = [
        StartedRun(r.dagster_run.run_id, r.dagster_run.job_name, r.start_time)
        for r in records
        if r.start_time is not None
    ]
    before = json.loads(context.cursor)["alerted"] if context.cursor else []
    watch = watch_started_runs(runs, time.time(), limit, before)
    for payload in watch.alerts:
        context.log.warning(payload["message"])
        alerts.notify(payload)
    context.update_cursor(json.dumps({"alerted": watch.alerted}))
    return dg.SkipReason(
        f"{len(runs)} run(s) STARTED, {watch.overdue} past {limit:g} min, "
        f"{len(watch.alerts)} newly alerted"
    )


@dg.definitions
def run_watch() -> dg.Definitions:
    return dg.Definitions(sensors=[stuck_run_alert])
