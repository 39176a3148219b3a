"""Typed resources built from ``Settings``."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.alerts import post_alert
from levibot_pipelines.adapters.sources import Source, make_source
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.settings import Settings


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


class AlertResource(dg.ConfigurableResource):
    """Alert channel: the log, plus a JSON webhook when ``webhook_url`` is set."""

    webhook_url: str | None = None

    def notify(self, payload: dict) -> bool:
        return post_alert(self.webhook_url, payload)


def build_resources(s: Settings) -> dict:
    return {
        "market": MarketDataResource.from_settings(s),
        "warehouse": DuckDBResource(database=str(s.warehouse_path)),
        # The URL may carry a token: it reaches Dagster as an EnvVar, never as a literal.
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("LEVIBOT_ALERT_WEBHOOK") if s.alert_webhook else None
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=build_resources(Settings.from_env()))
