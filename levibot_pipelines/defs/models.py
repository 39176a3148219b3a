"""Model assets (one partition per symbol): ``lgbm_model``, ``deep_tfm_model``,
``ensemble_weights`` and ``model_report``, their checks, the training job and its schedule."""

import base64
import json
from pathlib import Path

import dagster as dg
import polars as pl

from levibot_pipelines.adapters.plots import backtest_plots, reliability_diagram, risk_coverage_plot
from levibot_pipelines.adapters.reports import (
    BACKTEST_COLUMNS,
    backtest_markdown,
    backtest_rows,
    symbol_report,
    write_report,
)
from levibot_pipelines.core.evaluation.walk_forward import (
    evaluate_symbol,
    risk_coverage_curves,
    symbol_data,
)
from levibot_pipelines.defs.market import markdown_table, symbol_partitions
from levibot_pipelines.defs.resources import MarketDataResource, ModelResource, TradingResource
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases import train as model_ops
from levibot_pipelines.usecases.report import backtest_symbol

FEATURES = dg.AssetKey("cross_asset_features")
MODEL_ASSETS = ("lgbm_model", "deep_tfm_model", "ensemble_weights", "model_report")
TRAINING_POOL = "training"  # one training step at a time: 2 cores do not train 3 models at once


def image_md(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _result(res: model_ops.TrainResult) -> dg.MaterializeResult:
    m = res.metrics
    return dg.MaterializeResult(
        metadata={
            "mlflow_run": dg.MetadataValue.url(res.run_url),
            "model_version": res.version,
            "champion_decision": res.decision["reason"],
            "promoted": bool(res.decision["promoted"]),
            "test_window_ms": res.window,
            "rows": dg.MetadataValue.json(res.sizes),
            **{f"test_{k}": float(m[k]) for k in ("auc", "log_loss", "brier", "bss", "ece")},
            "test_acc_at_coverage": dg.MetadataValue.json(m["acc_at_coverage"]),
            "reliability": image_md(res.reliability_png, "reliability diagram"),
        }
    )


def _metric_key(key: str) -> str:
    """MLflow metric names allow letters, digits and ``_-./ ``: no parentheses or commas."""
    return key.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")


def report_dir(home: str, symbol: str) -> Path:
    return Path(home) / "reports" / symbol


def build_model_assets(s: Settings) -> list[dg.AssetsDefinition]:
    partitions = symbol_partitions(s)
    common = dict(partitions_def=partitions, group_name="models", pool=TRAINING_POOL)

    def _data(context, market: MarketDataResource):
        return symbol_data(market.store().read_features(), context.partition_key)

    def _train(train_fn, context, market: MarketDataResource, models: ModelResource):
        profile, cfg = models.eval_config()
        context.log.info(f"profile {profile}: {cfg.transformer}")
        data, tf_ms = _data(context, market), market.settings().timeframe_ms
        res = train_fn(models.tracker(), Path(models.home), data, cfg, tf_ms=tf_ms)
        return _result(res)

    @dg.asset(
        name="lgbm_model",
        deps=[FEATURES],
        kinds={"lightgbm", "mlflow"},
        **common,
        description="Calibrated LightGBM direction classifier fitted on the newest "
        "walk-forward layout; registered in MLflow, champion moved only if no worse.",
    )
    def lgbm_model(
        context: dg.AssetExecutionContext, market: MarketDataResource, models: ModelResource
    ) -> dg.MaterializeResult:
        return _train(model_ops.train_lgbm, context, market, models)

    @dg.asset(
        name="deep_tfm_model",
        deps=[FEATURES],
        kinds={"pytorch", "mlflow"},
        **common,
        description="Transformer (p_up, mu, sigma) with MC-dropout uncertainty, "
        "calibrated p_up; registered in MLflow, champion moved only if no worse.",
    )
    def deep_tfm_model(
        context: dg.AssetExecutionContext, market: MarketDataResource, models: ModelResource
    ) -> dg.MaterializeResult:
        return _train(model_ops.train_deep, context, market, models)

    @dg.asset(
        name="ensemble_weights",
        deps=[lgbm_model, deep_tfm_model],
        kinds={"json"},
        **common,
        description="Weight of the LightGBM and Transformer champions, fitted "
        "on validation predictions, with per-bar confidence weighting.",
    )
    def ensemble_weights(
        context: dg.AssetExecutionContext, market: MarketDataResource, models: ModelResource
    ) -> dg.MaterializeResult:
        _, cfg = models.eval_config()
        tf_ms = market.settings().timeframe_ms
        res = model_ops.fit_champion_ensemble(
            models.tracker(), Path(models.home), _data(context, market), cfg, tf_ms=tf_ms
        )
        return dg.MaterializeResult(
            metadata={
                "w_lgbm": float(res["w_lgbm"]),
                "formula": res["formula"],
                "lgbm_version": res["lgbm_version"],
                "deep_version": res["deep_version"],
                "test_log_loss": dg.MetadataValue.json(res["test_log_loss"]),
            }
        )

    @dg.asset(
        name="model_report",
        deps=[FEATURES],
        kinds={"mlflow"},
        **common,
        description="Purged walk-forward out-of-sample metrics (most recent "
        "LEVIBOT_REPORT_FOLDS folds) of LightGBM, Transformer, ensemble and baselines.",
    )
    def model_report(
        context: dg.AssetExecutionContext,
        market: MarketDataResource,
        models: ModelResource,
        trading: TradingResource,
    ) -> dg.MaterializeResult:
        profile, cfg = models.eval_config()
        store = market.store()
        features = store.read_features()
        data = symbol_data(features, context.partition_key)
        ev = evaluate_symbol(
            data, cfg, tf_ms=market.settings().timeframe_ms, progress=context.log.info
        )
        bt = backtest_symbol(
            trading.settings(), data.symbol, ev.predictions, store.read_ohlcv(data.symbol), features
        )
        out = report_dir(models.home, data.symbol)
        write_report(
            out,
            [ev],
            {
                "source": market.source,
                "profile": profile,
                "symbols": [data.symbol],
                "config": cfg.to_dict(),
            },
            {data.symbol: bt},
        )
        rep = symbol_report(ev)
        bt_plots = backtest_plots(bt, data.symbol)
        flat_bt = {
            f"backtest.{name.strip()}.{k}": float(v)
            for name, m in backtest_rows(bt.report).items()
            for k, v in m.items()
            if isinstance(v, int | float) and k in dict(BACKTEST_COLUMNS)
        }
        flat = {
            f"{name}.{k}": float(v)
            for name, m in rep["models"].items()
            for k, v in m.items()
            if not isinstance(v, dict)
        }
        y = ev.predictions.get_column("y_up").to_numpy()
        rel = reliability_diagram(
            y,
            ev.predictions.get_column("p_ensemble").to_numpy(),
            title=f"{data.symbol} ensemble (walk-forward test)",
        )
        rc = risk_coverage_plot(risk_coverage_curves(ev.predictions), title=data.symbol)
        run = models.tracker().log_training_run(
            run_name=f"report-{data.symbol}",
            params={"config": cfg.to_dict(), "policy": bt.report["policy"]},
            metrics=flat | {_metric_key(k): v for k, v in flat_bt.items()},
            files={
                "report.json": json.dumps({**rep, "backtest": bt.report}),
                "plots/reliability_ensemble.png": rel,
                "plots/risk_coverage.png": rc,
                **{f"plots/{name}": png for name, png in bt_plots.items()},
            },
            tags={"symbol": data.symbol, "kind": "report"},
        )
        table = pl.DataFrame(
            [
                {"model": n, **{k: m[k] for k in ("auc", "log_loss", "brier", "bss", "ece")}}
                for n, m in rep["models"].items()
            ]
        )
        return dg.MaterializeResult(
            metadata={
                "n_test": rep["n_test"],
                "folds": rep["folds"],
                "metrics": dg.MetadataValue.md(markdown_table(table)),
                "mlflow_run": dg.MetadataValue.url(run.url),
                "report": dg.MetadataValue.path(str(out / "report.md")),
                "reliability_ensemble": image_md(rel, "reliability"),
                "risk_coverage": image_md(rc, "risk-coverage"),
                "backtest": dg.MetadataValue.md(backtest_markdown(bt.report)),
                "backtest_sharpe": float(bt.report["sharpe"]),
                "backtest_n_trades": int(bt.report["n_trades"]),
                "buy_and_hold_sharpe": float(bt.report["buy_and_hold"]["sharpe"]),
                "equity": image_md(bt_plots["equity.png"], "equity"),
                "drawdown": image_md(bt_plots["drawdown.png"], "drawdown"),
            }
        )

    return [lgbm_model, deep_tfm_model, ensemble_weights, model_report]


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
        context: dg.AssetCheckExecutionContext, models: ModelResource
    ) -> dg.AssetCheckResult:
        path = model_ops.predictions_path(Path(models.home), context.partition_key, kind)
        p = pl.read_parquet(path).get_column("p")
        n_nan = int(p.is_nan().sum() + p.null_count())
        spread = float(p.max() - p.min()) if n_nan == 0 else float("nan")
        return dg.AssetCheckResult(
            passed=n_nan == 0 and spread > 1e-9,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"nan": n_nan, "spread": spread, "n": p.len()},
        )

    return predictions_valid


def build_model_checks(s: Settings) -> list[dg.AssetChecksDefinition]:
    partitions = symbol_partitions(s)
    checks = [
        _predictions_check(asset, kind, partitions)
        for asset, kind in (("lgbm_model", "lgbm"), ("deep_tfm_model", "deep"))
    ]

    @dg.asset_check(
        asset="model_report",
        name="calibration_and_skill",
        partitions_def=partitions,
        description="WARN when a model's ECE > 0.02, "
        "its Brier skill score < 0, or the ensemble is worse than its best member.",
    )
    def calibration_and_skill(
        context: dg.AssetCheckExecutionContext, models: ModelResource
    ) -> dg.AssetCheckResult:
        rep = json.loads(
            (report_dir(models.home, context.partition_key) / "report.json").read_text()
        )["symbols"][context.partition_key]["models"]
        problems = [
            f"{n}: ECE {rep[n]['ece']:.4f} > 0.02"
            for n in ("lgbm", "deep", "ensemble")
            if rep[n]["ece"] > 0.02
        ]
        problems += [
            f"{n}: BSS {rep[n]['bss']:+.4f} < 0"
            for n in ("lgbm", "deep", "ensemble")
            if rep[n]["bss"] < 0
        ]
        best = min(rep["lgbm"]["log_loss"], rep["deep"]["log_loss"])
        if rep["ensemble"]["log_loss"] > best:
            problems.append(
                f"ensemble log loss {rep['ensemble']['log_loss']:.5f} > best member {best:.5f}"
            )
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"problems": dg.MetadataValue.json(problems)},
        )

    return [*checks, calibration_and_skill]


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
        cron_schedule=s.retrain_cron,
        execution_timezone=s.retrain_timezone,
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
def models() -> dg.Definitions:
    s = Settings.from_env()
    return dg.Definitions.merge(
        dg.Definitions(assets=build_model_assets(s), asset_checks=build_model_checks(s)),
        build_training_automation(s),
    )
