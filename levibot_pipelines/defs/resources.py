"""Dagster resources: each holds the one ``Settings`` and hands out what a step needs.

A setting is declared and defaulted once, in ``settings.py``; the resources never copy its
fields. ``market``, ``models`` and ``trading`` are plain objects (Dagster ``ResourceParam``s),
named for what the steps that take them do; ``alerts`` is a ``ConfigurableResource`` because its
webhook URL may carry a token and reaches Dagster as an ``EnvVar``, never as a literal.

MLflow and the model configuration (torch) are imported when a step asks for them: see
``defs.models`` for why the code location imports neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.alerts import post_alert
from levibot_pipelines.adapters.home import mlartifacts_dir, mlflow_tracking_uri, warehouse_path
from levibot_pipelines.adapters.sources import Source
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_store
from levibot_pipelines.usecases.ingest import make_source

if TYPE_CHECKING:
    from levibot_pipelines.adapters.tracking import Tracker
    from levibot_pipelines.core.evaluation.walk_forward import EvalConfig


class MarketDataResource:
    """Where candles come from (``settings.market``) and the Parquet store under the home."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def store(self) -> ParquetStore:
        """The store in the data root: the home, or LEVIBOT_DATA_URL's bucket (locks: home)."""
        return data_store(self.settings)

    def build_source(self) -> Source:
        return make_source(self.settings.market)


class ModelResource:
    """Model sizes, the walk-forward layout (``settings.models``) and the MLflow store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def eval_config(self) -> tuple[str, EvalConfig]:
        """(resolved profile name, the walk-forward and model configuration)."""
        from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
        from levibot_pipelines.usecases.evaluate import eval_config, pipeline_budget

        s = self.settings
        m = s.models
        train, val, calib, test = m.walk
        return eval_config(
            m.profile,
            budget=pipeline_budget(len(s.market.symbols), m.report_folds, m.train_budget_min),
            home=s.home,
            walk=WalkForwardConfig(train=train, val=val, calib=calib, test=test, purge=m.purge),
            horizon=m.label_horizon,
            epochs=m.epochs,
            mc_samples=m.mc_samples,
            max_folds=m.report_folds,
            precision=m.precision,
        )

    def tracker(self) -> Tracker:
        from levibot_pipelines.adapters.tracking import Tracker

        s = self.settings
        uri = mlflow_tracking_uri(s.home, s.models.mlflow_tracking_uri)
        return Tracker(uri, mlartifacts_dir(s.home), ui_base=s.models.mlflow_ui)


class TradingResource:
    """Policy, costs, kill-switch limits, drift thresholds and publishing (``settings.trading``):
    what the backtest, the drift check and the publish job share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


# What asset, check and sensor signatures annotate: ``market: Market`` etc.
Market = dg.ResourceParam[MarketDataResource]
Models = dg.ResourceParam[ModelResource]
Trading = dg.ResourceParam[TradingResource]


class AlertResource(dg.ConfigurableResource):
    """Alert channel: the log, plus a JSON webhook when ``webhook_url`` is set."""

    webhook_url: str | None = None

    def notify(self, payload: dict) -> bool:
        return post_alert(self.webhook_url, payload)


def build_resources(s: Settings) -> dict:
    return {
        "market": MarketDataResource(s),
        "warehouse": DuckDBResource(database=str(warehouse_path(s.home))),
        "models": ModelResource(s),
        "trading": TradingResource(s),
        # The URL may carry a token: it reaches Dagster as an EnvVar, never as a literal.
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("LEVIBOT_ALERT_WEBHOOK") if s.alerts.alert_webhook else None
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
