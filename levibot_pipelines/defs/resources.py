"""Typed resources built from ``Settings``."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.alerts import post_alert
from levibot_pipelines.adapters.sources import Source
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.evaluate import eval_config
from levibot_pipelines.usecases.ingest import make_source


class MarketDataResource(dg.ConfigurableResource):
    """Where candles come from and where the Parquet store lives."""

    home: str
    source: str = "synthetic"
    exchange: str = "binance"
    exchange_api_url: str | None = None
    files_dir: str | None = None
    symbols: list[str]
    timeframe: str = "15m"
    start: str
    synthetic_seed: int = 7
    label_horizon: int = 1
    max_staleness_minutes: float = 5.0
    fail_staleness_minutes: float = 30.0

    @classmethod
    def from_settings(cls, s: Settings) -> "MarketDataResource":
        return cls(
            home=str(s.home),
            source=s.source,
            exchange=s.exchange,
            exchange_api_url=s.exchange_api_url,
            files_dir=str(s.files_dir) if s.files_dir else None,
            symbols=list(s.symbols),
            timeframe=s.timeframe,
            start=s.start,
            synthetic_seed=s.synthetic_seed,
            label_horizon=s.label_horizon,
            max_staleness_minutes=s.max_staleness_minutes,
            fail_staleness_minutes=s.fail_staleness_minutes,
        )

    def settings(self) -> Settings:
        return Settings(
            home=Path(self.home),
            source=self.source,
            exchange=self.exchange,
            exchange_api_url=self.exchange_api_url,
            symbols=tuple(self.symbols),
            timeframe=self.timeframe,
            start=self.start,
            files_dir=Path(self.files_dir) if self.files_dir else None,
            synthetic_seed=self.synthetic_seed,
            label_horizon=self.label_horizon,
            max_staleness_minutes=self.max_staleness_minutes,
            fail_staleness_minutes=self.fail_staleness_minutes,
        )

    def store(self) -> ParquetStore:
        return ParquetStore(Path(self.home))

    def build_source(self) -> Source:
        return make_source(self.settings())


class ModelResource(dg.ConfigurableResource):
    """Model sizes, walk-forward layout and the MLflow store the training assets use."""

    home: str
    profile: str = "auto"
    walk: list[int] = [20_000, 3_000, 3_000, 4_000]
    purge: int = 130
    epochs: int = 4
    mc_samples: int = 50
    report_folds: int = 3
    label_horizon: int = 1
    tracking_uri: str
    mlflow_ui: str = "http://127.0.0.1:5000"

    @classmethod
    def from_settings(cls, s: Settings) -> "ModelResource":
        return cls(
            home=str(s.home),
            profile=s.profile,
            walk=list(s.walk),
            purge=s.purge,
            epochs=s.epochs,
            mc_samples=s.mc_samples,
            report_folds=s.report_folds,
            label_horizon=s.label_horizon,
            tracking_uri=s.tracking_uri,
            mlflow_ui=s.mlflow_ui,
        )

    def eval_config(self) -> tuple[str, EvalConfig]:
        """(resolved profile name, the walk-forward and model configuration)."""
        train, val, calib, test = self.walk
        return eval_config(
            self.profile,
            walk=WalkForwardConfig(train=train, val=val, calib=calib, test=test, purge=self.purge),
            horizon=self.label_horizon,
            epochs=self.epochs,
            mc_samples=self.mc_samples,
            max_folds=self.report_folds,
        )

    def tracker(self) -> Tracker:
        home = Path(self.home)
        return Tracker(self.tracking_uri, home / "mlartifacts", ui_base=self.mlflow_ui)


class TradingResource(dg.ConfigurableResource):
    """Policy, costs, kill-switch limits, drift thresholds and publishing: the settings the
    backtest, the drift check and the publish job share."""

    home: str
    symbols: list[str]
    source: str = "synthetic"
    timeframe: str = "15m"
    mc_samples: int = 50
    fee_bps: float = 10.0
    slippage_bps: dict[str, float] = {}
    default_slippage_bps: float = 2.0
    allow_short: bool = False
    entry_threshold: float = 0.55
    max_uncertainty: float | None = 0.10
    kill_max_drawdown: float = 0.20
    kill_staleness_minutes: float = 60.0
    reducing_factor: float = 0.5
    psi_warn: float = 0.10
    psi_error: float = 0.25
    drift_window: int = 672
    pushgateway_url: str | None = None
    max_staleness_minutes: float = 5.0
    fail_staleness_minutes: float = 30.0

    @classmethod
    def from_settings(cls, s: Settings) -> "TradingResource":
        return cls(
            home=str(s.home),
            symbols=list(s.symbols),
            **{f: getattr(s, f) for f in TRADING_FIELDS},
            slippage_bps=dict(s.slippage_bps),
        )

    def settings(self) -> Settings:
        return Settings(
            home=Path(self.home),
            symbols=tuple(self.symbols),
            **{f: getattr(self, f) for f in TRADING_FIELDS},
            slippage_bps=tuple(self.slippage_bps.items()),
        )


TRADING_FIELDS = (
    "source",
    "timeframe",
    "mc_samples",
    "fee_bps",
    "default_slippage_bps",
    "allow_short",
    "entry_threshold",
    "max_uncertainty",
    "kill_max_drawdown",
    "kill_staleness_minutes",
    "reducing_factor",
    "psi_warn",
    "psi_error",
    "drift_window",
    "pushgateway_url",
    "max_staleness_minutes",
    "fail_staleness_minutes",
)


class AlertResource(dg.ConfigurableResource):
    """Alert channel: the log, plus a JSON webhook when ``webhook_url`` is set."""

    webhook_url: str | None = None

    def notify(self, payload: dict) -> bool:
        return post_alert(self.webhook_url, payload)


def build_resources(s: Settings) -> dict:
    return {
        "market": MarketDataResource.from_settings(s),
        "warehouse": DuckDBResource(database=str(s.warehouse_path)),
        "models": ModelResource.from_settings(s),
        "trading": TradingResource.from_settings(s),
        # The URL may carry a token: it reaches Dagster as an EnvVar, never as a literal.
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("LEVIBOT_ALERT_WEBHOOK") if s.alert_webhook else None
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
