"""Shadow challengers: ``shadow_predictions``, in ``publish_job`` after ``latest_predictions`` and
``live_scores``. Each run first applies the shadow rule to every challenger on what live scoring
just scored (``usecases.shadow_promotion``: promote, retire or wait), then publishes the
remaining challengers beside the champions under ``$LEVIBOT_HOME/published/shadow``
(``usecases.shadow``), never traded. The use cases are imported in the body (they import torch
and MLflow; see ``defs.models``)."""

import dagster as dg
import polars as pl

from levibot_pipelines.defs.common import markdown_table, now_ms
from levibot_pipelines.defs.resources import Models, Trading

LATEST = dg.AssetKey("latest_predictions")
LIVE = dg.AssetKey("live_scores")
ROWS = ("symbol", "bar_time", "lgbm_version", "deep_version", "lgbm_p_up", "deep_p_up")
DECISIONS = (
    "symbol",
    "kind",
    "champion_version",
    "challenger_version",
    "action",
    "n",
    "mean_diff",
    "t",
)


@dg.asset(
    name="shadow_predictions",
    deps=[LATEST, LIVE],
    group_name="serving",
    kinds={"parquet", "json", "mlflow"},
    description="Shadow challengers: a retrained version that passed the offline rule while a "
    "champion held the alias is published beside it under $LEVIBOT_HOME/published/shadow "
    "(API: ?shadow=1), scored live as shadow_{model}, never traded; it replaces the champion "
    "when its paired live log-loss gain over at least LEVIBOT_SHADOW_MIN_BARS matured bars has "
    "t >= 2 (standard error x sqrt(horizon)), and is retired at t <= -2 "
    "(core.evaluation.shadow_rule).",
)
def shadow_predictions(
    context: dg.AssetExecutionContext, trading: Trading, models: Models
) -> dg.MaterializeResult:
    from levibot_pipelines.usecases.shadow import publish_shadow
    from levibot_pipelines.usecases.shadow_promotion import promote_challengers

    s, tracker = trading.settings, models.tracker()
    _, cfg = models.eval_config()
    decisions, notes = promote_challengers(s, tracker, cfg, now_ms())
    report = publish_shadow(s, tracker, now_ms())
    for note in [*notes, *report.notes]:
        context.log.warning(note)
    table = pl.DataFrame([{k: getattr(d, k) for k in DECISIONS} for d in decisions])
    rows = report.rows.select(ROWS) if report.rows.height else report.rows
    return dg.MaterializeResult(
        metadata={
            "rows": report.rows.height,
            "challengers": dg.MetadataValue.json(
                {sym: dict(p.versions) for sym, p in report.pairs.items()}
            ),
            "decisions": dg.MetadataValue.md(markdown_table(table)),
            "promoted": dg.MetadataValue.json(_named(decisions, "promote")),
            "retired": dg.MetadataValue.json(_named(decisions, "retire")),
            "predictions": dg.MetadataValue.md(markdown_table(rows)),
            "path": dg.MetadataValue.path(str(report.path) if report.path else "(none)"),
            "removed_stale_file": report.removed,
            "notes": dg.MetadataValue.json([*notes, *report.notes]),
        }
    )


def _named(decisions: list, action: str) -> list[str]:
    """``SYMBOL/kind`` of the decisions with ``action``."""
    return [f"{d.symbol}/{d.kind}" for d in decisions if d.action == action]


@dg.definitions
def shadow() -> dg.Definitions:
    return dg.Definitions(assets=[shadow_predictions])
