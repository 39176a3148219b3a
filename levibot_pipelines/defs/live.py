"""Live scoring: ``live_scores``, every published prediction scored once its label matured
(``usecases.live_scores``), and its check against the walk-forward test skill. It runs in
``publish_job`` after ``latest_predictions``, so each publish also scores what matured.
The use case and the plots are imported in the bodies (heavy: see ``defs.models``)."""

from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.home import live_summary_path
from levibot_pipelines.adapters.live_files import read_summary
from levibot_pipelines.defs.common import image_md, markdown_table, now_ms
from levibot_pipelines.defs.resources import Trading

if TYPE_CHECKING:
    from levibot_pipelines.usecases.live_scores import LiveScoresResult

LATEST = dg.AssetKey("latest_predictions")
LIVE = dg.AssetKey("live_scores")


def _plots(res: "LiveScoresResult") -> dict[str, dg.MetadataValue]:
    """A rolling live AUC plot per symbol with at least two points to draw."""
    from levibot_pipelines.adapters.plots import live_auc_plot

    out = {}
    for sym, (times, curves) in res.rolling.items():
        if times.size < 2:
            continue
        wf = {m: s["wf_auc"] for m, s in res.summary["symbols"][sym]["models"].items()}
        png = live_auc_plot(times, curves, wf, title=f"{sym} rolling live AUC (dashed: test)")
        out[f"rolling_auc_{sym}"] = image_md(png, f"{sym} rolling live AUC")
    return out


@dg.asset(
    name="live_scores",
    deps=[LATEST],
    group_name="serving",
    kinds={"parquet", "json"},
    description="Every published prediction scored once its outcome is known (the label of "
    "bar t matures with bar t+h): an append-only history under $LEVIBOT_HOME/live/scores and "
    "live/summary.json with the rolling AUC, log loss, Brier, ECE and IC per symbol and model "
    "over the newest LEVIBOT_LIVE_WINDOW matured bars, and the paper P&L per symbol.",
)
def live_scores(context: dg.AssetExecutionContext, trading: Trading) -> dg.MaterializeResult:
    from levibot_pipelines.usecases.live_scores import live_config, score_matured

    s = trading.settings
    res = score_matured(s.home, live_config(s), now_ms())
    for note in res.notes:
        context.log.warning(note)
    symbols = res.summary["symbols"]
    return dg.MaterializeResult(
        metadata={
            "new_rows": res.new_rows,
            "n_matured": dg.MetadataValue.json({k: v["n_matured"] for k, v in symbols.items()}),
            "window": res.summary["window"],
            "scores": dg.MetadataValue.md(markdown_table(res.table)),
            "paper_pnl_ratio": dg.MetadataValue.json(
                {k: v["paper_pnl_ratio"] for k, v in symbols.items()}
            ),
            "summary": dg.MetadataValue.path(str(live_summary_path(s.home))),
            "scores_file": dg.MetadataValue.path(str(res.path) if res.path else "(none new)"),
            "notes": dg.MetadataValue.json(res.notes),
            **_plots(res),
        }
    )


@dg.asset_check(
    asset=LIVE,
    name="live_skill_within_noise_band",
    description="WARN when a model's live AUC over the rolling window is below its "
    "walk-forward test AUC (report.json) by more than the noise band: 1.96 x sqrt(h x "
    "(SE_live^2 + SE_test^2)), Hanley-McNeil standard errors "
    "(core.evaluation.live_scoring).",
)
def live_skill_within_noise_band(trading: Trading) -> dg.AssetCheckResult:
    summary = read_summary(trading.settings.home)
    if summary is None:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"note": "nothing scored yet"},
        )
    rows = [
        {"symbol": sym, "model": m, **{k: s[k] for k in ("n", "auc", "wf_auc", "threshold")}}
        | {"below": bool(s["below"])}
        for sym, entry in summary["symbols"].items()
        for m, s in entry["models"].items()
        if s.get("wf_auc") is not None and s.get("auc") is not None
    ]
    below = [r for r in rows if r["below"]]
    return dg.AssetCheckResult(
        passed=not below,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "compared": len(rows),
            "below": dg.MetadataValue.md(markdown_table(pl.DataFrame(below)) if below else "none"),
            "comparison": dg.MetadataValue.md(markdown_table(pl.DataFrame(rows)) if rows else "-"),
        },
    )


@dg.definitions
def live() -> dg.Definitions:
    return dg.Definitions(assets=[live_scores], asset_checks=[live_skill_within_noise_band])
