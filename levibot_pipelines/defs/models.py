"""Model assets (one partition per symbol): ``lgbm_model``, ``deep_tfm_model``,
``ensemble_weights`` and ``model_report``; each calls a use case (``usecases.train``,
``usecases.report``) and returns its metadata. Their checks, the training job and its schedule
are in ``defs/model_checks.py``.

The use cases (torch, LightGBM, MLflow, matplotlib) are imported in the asset bodies, not here:
every run imports the whole code location, and an ingest or publish run should not pay for
training's imports (about 3 s of a run's start on 2 cores; ``test_definitions`` checks it)."""

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from levibot_pipelines.defs.common import symbol_partitions
from levibot_pipelines.defs.executors import GPU_STEP_TAGS
from levibot_pipelines.defs.model_metadata import report_metadata, train_metadata
from levibot_pipelines.defs.resources import Market, Models
from levibot_pipelines.settings import Settings

if TYPE_CHECKING:
    from levibot_pipelines.core.evaluation.walk_forward import SymbolData

FEATURES = dg.AssetKey("cross_asset_features")
MODEL_ASSETS = ("lgbm_model", "deep_tfm_model", "ensemble_weights", "model_report")
TRAINING_POOL = "training"  # one training step at a time: 2 cores do not train 3 models at once


def _data(context: dg.AssetExecutionContext, market: Market) -> "SymbolData":
    from levibot_pipelines.core.evaluation.walk_forward import symbol_data

    return symbol_data(market.store().read_features(), context.partition_key)


def _train(kind: str, context, market: Market, models: Models):
    """Train ``kind`` (``"lgbm"`` or ``"transformer"``: ``usecases.train.train_{kind}``)."""
    from levibot_pipelines.usecases import train

    train_fn = getattr(train, f"train_{kind}")
    profile, cfg = models.eval_config()
    context.log.info(f"profile {profile}: {cfg.transformer}")
    data, tf_ms = _data(context, market), market.settings.market.timeframe_ms
    res = train_fn(models.tracker(), Path(models.settings.home), data, cfg, tf_ms=tf_ms)
    return dg.MaterializeResult(metadata=train_metadata(res))


def _model_assets(common: dict) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="lgbm_model",
        deps=[FEATURES],
        kinds={"lightgbm", "mlflow"},
        **common,
        description="Calibrated LightGBM direction classifier fitted on the newest "
        "walk-forward layout; registered in MLflow, champion or shadow challenger.",
    )
    def lgbm_model(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        return _train("lgbm", context, market, models)

    @dg.asset(
        name="deep_tfm_model",
        deps=[FEATURES],
        kinds={"pytorch", "mlflow"},
        op_tags=GPU_STEP_TAGS,  # the Celery `gpu` queue on the cluster (defs/executors.py)
        **common,
        description="Transformer (p_up, mu, sigma) with MC-dropout uncertainty, "
        "calibrated p_up; registered in MLflow, champion or shadow challenger.",
    )
    def deep_tfm_model(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        return _train("transformer", context, market, models)

    return [lgbm_model, deep_tfm_model]


def _ensemble_asset(common: dict, members: list[dg.AssetsDefinition]) -> dg.AssetsDefinition:
    @dg.asset(
        name="ensemble_weights",
        deps=members,
        kinds={"json"},
        **common,
        description="Weight of the LightGBM and Transformer champions, fitted "
        "on validation predictions, with per-bar confidence weighting, and the decision "
        "policy published with them (chosen on validation/calibration bars, flat a candidate).",
    )
    def ensemble_weights(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        from levibot_pipelines.usecases import ensemble

        _, cfg = models.eval_config()
        s, symbol = market.settings, context.partition_key
        res = ensemble.fit_champion_ensemble(
            models.tracker(),
            Path(models.settings.home),
            _data(context, market),
            cfg,
            tf_ms=s.market.timeframe_ms,
            bars=market.store().read_ohlcv(symbol),
            decision=ensemble.decision_setup(s, symbol),
        )
        d = res["decision"]
        return dg.MaterializeResult(
            metadata={
                "w_lgbm": float(res["w_lgbm"]),
                "formula": res["formula"],
                "lgbm_version": res["lgbm_version"],
                "deep_version": res["deep_version"],
                "test_log_loss": dg.MetadataValue.json(res["test_log_loss"]),
                "decision_policy": dg.MetadataValue.json(d["policy"]),
                "decision": ensemble.policy_line(d),
                "decision_candidates": d["n_candidates"],
                "decision_test": dg.MetadataValue.json(d["test"]),
            }
        )

    return ensemble_weights


def _report_asset(common: dict) -> dg.AssetsDefinition:
    @dg.asset(
        name="model_report",
        deps=[FEATURES],
        kinds={"mlflow"},
        op_tags=GPU_STEP_TAGS,  # trains a Transformer per fold
        **common,
        description="Purged walk-forward out-of-sample metrics (most recent "
        "LEVIBOT_REPORT_FOLDS folds) of LightGBM, Transformer, ensemble and baselines.",
    )
    def model_report(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        from levibot_pipelines.usecases.report import report_symbol

        profile, cfg = models.eval_config()
        res = report_symbol(
            models.tracker(),
            market.store(),
            cfg,
            models.settings,
            symbol=context.partition_key,
            meta={"source": models.settings.market.source, "profile": profile},
            progress=context.log.info,
        )
        return dg.MaterializeResult(metadata=report_metadata(res))

    return model_report


def build_model_assets(s: Settings) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=symbol_partitions(s), group_name="models", pool=TRAINING_POOL)
    members = _model_assets(common)
    return [*members, _ensemble_asset(common, members), _report_asset(common)]


@dg.definitions
def models() -> dg.Definitions:
    return dg.Definitions(assets=build_model_assets(Settings.from_env()))
