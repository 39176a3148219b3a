"""Market-data assets: ``ohlcv`` (one partition per symbol) and ``cross_asset_features``.
Their checks are in ``defs.market_checks``."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.store import StoredFileError, refresh_views
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.data.timeframes import staleness_minutes
from levibot_pipelines.defs.common import (
    WAREHOUSE_POOL,
    markdown_table,
    now_ms,
    refresh_warehouse_views,
    symbol_partitions,
)
from levibot_pipelines.defs.common import timestamp_metadata as _ts
from levibot_pipelines.defs.resources import Market
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.features import rebuild_features
from levibot_pipelines.usecases.ingest import ingest_symbol


def build_market_assets(s: Settings) -> list[dg.AssetsDefinition]:
    return [_ohlcv_asset(symbol_partitions(s)), cross_asset_features]


def _ohlcv_asset(partitions: dg.StaticPartitionsDefinition) -> dg.AssetsDefinition:

    @dg.asset(
        name="ohlcv",
        partitions_def=partitions,
        group_name="market",
        kinds={"parquet", "polars"},
        # No RetryPolicy: the ccxt source owns retries, bounded per tick (at most 6 attempts per
        # request and LEVIBOT_SOURCE_RETRY_SECONDS failing); the next schedule tick is the next try.
        description="Closed OHLCV bars per symbol (open time in ms UTC), validated, upserted "
        "incrementally into $LEVIBOT_HOME/ohlcv/{SYMBOL}.parquet. A failing exchange is "
        "retried by the source only (at most 6 attempts per request and "
        "LEVIBOT_SOURCE_RETRY_SECONDS, default 60 s, per symbol and tick).",
    )
    def ohlcv(context: dg.AssetExecutionContext, market: Market) -> dg.MaterializeResult:
        settings = market.settings
        try:
            report = ingest_symbol(
                market.build_source(),
                market.store(),
                context.partition_key,
                start_ms=settings.market.start_ms,
                now_ms=now_ms(),
                tf_ms=settings.market.timeframe_ms,
            )
        except StoredFileError as exc:  # permanent: fail once, naming the file
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        return dg.MaterializeResult(
            metadata={
                "source": report.source,
                "rows_fetched": report.fetched,
                "rows_added": report.rows_added,
                "total_rows": report.total_rows,
                "first_bar": _ts(report.first_bar),
                "last_bar": _ts(report.last_bar),
                "gaps": report.gaps,
                "missing_bars": report.missing_bars,
                "rejected_rows": report.n_rejected,
                "rejected_by_reason": dg.MetadataValue.json(report.rejected),
                "data_lag_s": report.data_lag_s,
            }
        )

    return ohlcv


@dg.asset(
    name="cross_asset_features",
    deps=[dg.AssetKey("ohlcv")],
    group_name="features",
    kinds={"parquet", "polars", "duckdb"},
    pool=WAREHOUSE_POOL,
    description="One row per (symbol, timestamp) on the grid common to all symbols: the ten "
    "scale-free features of core.data.features plus labels fwd_ret and y_up (horizon "
    "LEVIBOT_LABEL_HORIZON bars). DuckDB view: cross_asset_features.",
)
def cross_asset_features(market: Market, warehouse: DuckDBResource) -> dg.MaterializeResult:
    settings, store = market.settings, market.store()
    built = rebuild_features(
        store,
        settings.market.symbols,
        tf_ms=settings.market.timeframe_ms,
        horizon=settings.models.label_horizon,
    )
    views = refresh_warehouse_views(warehouse, lambda conn: refresh_views(conn, store))
    features, last = built.features, built.last_bar
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": features.height,
            "rows_per_symbol": dg.MetadataValue.json(built.rows_per_symbol),
            "first_bar": _ts(built.first_bar),
            "last_bar": _ts(last),
            "staleness_minutes": staleness_minutes(last, now_ms(), settings.market.timeframe_ms),
            "features": dg.MetadataValue.json(list(FEATURE_COLUMNS)),
            "duckdb_views": dg.MetadataValue.json(views),
            "path": dg.MetadataValue.path(str(store.features_path)),
            "newest_rows": dg.MetadataValue.md(
                markdown_table(features.group_by("symbol").tail(1).sort("symbol"))
            ),
        }
    )


@dg.definitions
def market() -> dg.Definitions:
    return dg.Definitions(assets=build_market_assets(Settings.from_env()))
