"""Feature drift: PSI of each model feature over the recent bars against the champion model's
training window, as an asset check on ``cross_asset_features`` that feeds the kill-switch."""

import json

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.trading.drift import drift_alarm, drift_report, max_level
from levibot_pipelines.core.trading.killswitch import drift_trigger
from levibot_pipelines.defs.market import markdown_table
from levibot_pipelines.defs.resources import ModelResource, TradingResource


def reference_windows(
    tracker: Tracker, features: pl.DataFrame, symbols: list[str], recent: int, fallback: int
) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Per symbol, the (first, last) bar of the LightGBM champion's training window, or - before
    any champion exists - the ``fallback`` bars preceding the recent window (said so)."""
    windows, described = {}, {}
    for symbol in symbols:
        name = model_name("lgbm", symbol)
        champ = tracker.champion(name)
        meta = json.loads(tracker.download_file(name, champ[0], "model/meta.json")) if champ else {}
        if "train_start_ms" in meta:
            windows[symbol] = (int(meta["train_start_ms"]), int(meta["train_end_ms"]))
            described[symbol] = f"{name} v{champ[0]} training window"
            continue
        ts = features.filter(pl.col("symbol") == symbol).get_column("timestamp").sort()
        end = max(len(ts) - recent - 1, 0)
        start = max(end - fallback + 1, 0)
        windows[symbol] = (int(ts[start]), int(ts[end]))
        described[symbol] = f"{end - start + 1} bars before the recent window (no champion yet)"
    return windows, described


@dg.asset_check(
    asset="cross_asset_features",
    name="feature_drift",
    description="PSI of each model feature, newest LEVIBOT_DRIFT_WINDOW bars vs the champion's "
    "training window, per symbol: WARN above LEVIBOT_PSI_WARN (0.1), ERROR above "
    "LEVIBOT_PSI_ERROR (0.25). An ERROR that is also beyond every same-length window inside "
    "the training window sets the kill-switch's drift trigger (REDUCING).",
)
def feature_drift(
    context: dg.AssetCheckExecutionContext, trading: TradingResource, models: ModelResource
) -> dg.AssetCheckResult:
    s = trading.settings()
    features = ParquetStore(s.home).read_features()
    windows, described = reference_windows(
        models.tracker(), features, list(s.symbols), s.drift_window, models.walk[0]
    )
    report = drift_report(
        features, windows, s.drift_window, FEATURE_COLUMNS, warn=s.psi_warn, error=s.psi_error
    )
    level = max_level(report)
    worst = report.sort("psi", descending=True).row(0, named=True)
    reason = f"PSI {worst['psi']:.3f} on {worst['feature']} ({worst['symbol']})"
    # The kill-switch reacts only to features past the ERROR level AND more unusual than any
    # window of the same length inside the training window (slow features exceed 0.25 on
    # ordinary weeks; see core.trading.drift.drift_report).
    top = drift_alarm(report)
    trigger = None
    if top is not None:
        trigger = drift_trigger(top["psi"], s.psi_warn, s.psi_error)
        reason = (
            f"PSI {top['psi']:.3f} on {top['feature']} ({top['symbol']}), above every same-length "
            f"window in training ({top['psi_in_training']:.3f})"
        )
    KillSwitch(s.home).set_trigger("drift", trigger, reason, by="auto:feature_drift")
    if level != "ok":
        context.log.warning(f"feature drift {level}: {reason}")
    flagged = report.filter(pl.col("level") != "ok").sort("psi", descending=True)
    return dg.AssetCheckResult(
        passed=level == "ok",
        severity=dg.AssetCheckSeverity.ERROR if level == "error" else dg.AssetCheckSeverity.WARN,
        metadata={
            "max_psi": float(worst["psi"]),
            "worst": f"PSI {worst['psi']:.3f} on {worst['feature']} ({worst['symbol']})",
            "beyond_training": int(report["beyond_training"].sum()),
            "kill_switch_trigger": trigger or "none",
            "flagged": dg.MetadataValue.md(markdown_table(flagged.head(30))),
            "reference": dg.MetadataValue.json(described),
            "recent_bars": s.drift_window,
            "psi_by_symbol_feature": dg.MetadataValue.md(
                markdown_table(
                    report.pivot(on="symbol", index="feature", values="psi").sort("feature")
                )
            ),
        },
    )


@dg.definitions
def monitoring() -> dg.Definitions:
    return dg.Definitions(asset_checks=[feature_drift])
