"""Model assets (one partition per symbol): ``lgbm_model``, ``deep_tfm_model``,
``ensemble_weights`` and ``model_report``; each calls a use case (``usecases.train``,
``usecases.report``) and returns its metadata. Their checks, the training job and its schedule
are in ``defs/model_checks.py``."""

from pathlib import Path

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.redact import redact_url
from levibot_pipelines.adapters.reports import backtest_markdown, decision_markdown
from levibot_pipelines.core.evaluation.walk_forward import SymbolData, symbol_data
from levibot_pipelines.defs.common import (
    backtest_summary_md,
    image_md,
    markdown_table,
    mlflow_images_md,
    symbol_partitions,
)
from levibot_pipelines.defs.resources import Market, Models
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases import ensemble, train
from levibot_pipelines.usecases.ensemble import policy_line
from levibot_pipelines.usecases.report import PLOT_ARTIFACTS, ReportResult, report_symbol

FEATURES = dg.AssetKey("cross_asset_features")
MODEL_ASSETS = ("lgbm_model", "deep_tfm_model", "ensemble_weights", "model_report")
TRAINING_POOL = "training"  # one training step at a time: 2 cores do not train 3 models at once
SCORES = ("auc", "log_loss", "brier", "bss", "ece")


def _train_metadata(res: train.TrainResult) -> dict:
    m = res.metrics
    return {
        "mlflow_run": dg.MetadataValue.url(redact_url(res.run_url)),
        "model_version": res.version,
        "champion_decision": res.decision["reason"],
        "promoted": bool(res.decision["promoted"]),
        "test_window_ms": res.window,
        "rows": dg.MetadataValue.json(res.sizes),
        **{f"test_{k}": float(m[k]) for k in SCORES},
        "test_acc_at_coverage": dg.MetadataValue.json(m["acc_at_coverage"]),
        # Shown inline (served by the MLflow UI); the embedded copy sits behind [Show Markdown].
        "reliability_plot": mlflow_images_md(res.run_url, {"reliability": "plots/reliability.png"}),
        "reliability": image_md(res.reliability_png, "reliability diagram"),
    }


def _report_metadata(res: ReportResult) -> dict:
    rep, bt = res.report, res.backtest
    table = pl.DataFrame(
        [{"model": n, **{k: m[k] for k in SCORES}} for n, m in rep["models"].items()]
    )
    return {
        "verdict": res.decision["verdict"],
        "decision": dg.MetadataValue.md(decision_markdown(res.decision)),
        "n_test": rep["n_test"],
        "folds": rep["folds"],
        "metrics": dg.MetadataValue.md(markdown_table(table)),
        "backtest_summary": dg.MetadataValue.md(backtest_summary_md(bt)),
        # Inline images served by the MLflow UI; the PNG files; then the embedded copies.
        "plots": mlflow_images_md(res.run_url, PLOT_ARTIFACTS),
        "plot_files": dg.MetadataValue.path(str(res.out / "plots")),
        "mlflow_run": dg.MetadataValue.url(redact_url(res.run_url)),
        "report": dg.MetadataValue.path(str(res.out / "report.md")),
        "reliability_ensemble": image_md(res.reliability_png, "reliability"),
        "risk_coverage": image_md(res.risk_coverage_png, "risk-coverage"),
        "backtest": dg.MetadataValue.md(backtest_markdown(bt)),
        "backtest_sharpe": float(bt["sharpe"]),
        "backtest_n_trades": int(bt["n_trades"]),
        "buy_and_hold_sharpe": float(bt["buy_and_hold"]["sharpe"]),
        "equity": image_md(res.backtest_pngs["equity.png"], "equity"),
        "drawdown": image_md(res.backtest_pngs["drawdown.png"], "drawdown"),
    }


def _data(context: dg.AssetExecutionContext, market: Market) -> SymbolData:
    return symbol_data(market.store().read_features(), context.partition_key)


def _train(train_fn, context, market: Market, models: Models):
    profile, cfg = models.eval_config()
    context.log.info(f"profile {profile}: {cfg.transformer}")
    data, tf_ms = _data(context, market), market.settings.market.timeframe_ms
    res = train_fn(models.tracker(), Path(models.settings.home), data, cfg, tf_ms=tf_ms)
    return dg.MaterializeResult(metadata=_train_metadata(res))


def _model_assets(common: dict) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="lgbm_model",
        deps=[FEATURES],
        kinds={"lightgbm", "mlflow"},
        **common,
        description="Calibrated LightGBM direction classifier fitted on the newest "
        "walk-forward layout; registered in MLflow, champion moved only if no worse.",
    )
    def lgbm_model(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        return _train(train.train_lgbm, context, market, models)

    @dg.asset(
        name="deep_tfm_model",
        deps=[FEATURES],
        kinds={"pytorch", "mlflow"},
        **common,
        description="Transformer (p_up, mu, sigma) with MC-dropout uncertainty, "
        "calibrated p_up; registered in MLflow, champion moved only if no worse.",
    )
    def deep_tfm_model(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
        return _train(train.train_transformer, context, market, models)

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
                "decision": policy_line(d),
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
        **common,
        description="Purged walk-forward out-of-sample metrics (most recent "
        "LEVIBOT_REPORT_FOLDS folds) of LightGBM, Transformer, ensemble and baselines.",
    )
    def model_report(
        context: dg.AssetExecutionContext, market: Market, models: Models
    ) -> dg.MaterializeResult:
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
        return dg.MaterializeResult(metadata=_report_metadata(res))

    return model_report


def build_model_assets(s: Settings) -> list[dg.AssetsDefinition]:
    common = dict(partitions_def=symbol_partitions(s), group_name="models", pool=TRAINING_POOL)
    members = _model_assets(common)
    return [*members, _ensemble_asset(common, members), _report_asset(common)]


@dg.definitions
def models() -> dg.Definitions:
    return dg.Definitions(assets=build_model_assets(Settings.from_env()))
