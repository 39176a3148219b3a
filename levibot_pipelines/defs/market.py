"""Market-data assets: ``ohlcv`` (one partition per symbol) and ``cross_asset_features``."""

import time

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.store import refresh_views
from levibot_pipelines.core.data.features import FEATURE_COLUMNS, FEATURE_SCHEMA, build_features
from levibot_pipelines.core.data.timeframes import staleness_minutes
from levibot_pipelines.core.data.validation import count_gaps
from levibot_pipelines.defs.resources import Market
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.ingest import ingest_symbol

WAREHOUSE_POOL = "duckdb_writer"


def now_ms() -> int:
    return int(time.time() * 1000)


def symbol_partitions(s: Settings) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(s.market.symbols))


def _ts(ms: int | None) -> dg.MetadataValue | None:
    return dg.MetadataValue.timestamp(ms / 1000) if ms is not None else None


def markdown_table(df: pl.DataFrame) -> str:
    """A small frame as a Markdown table (floats to 5 significant digits)."""
    if df.is_empty():
        return "(empty)"

    def cell(v: object) -> str:
        return f"{v:.5g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * df.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.iter_rows()]
    return "\n".join(lines)


def build_market_assets(s: Settings) -> list[dg.AssetsDefinition]:
    partitions = symbol_partitions(s)

    @dg.asset(
        name="ohlcv",
        partitions_def=partitions,
        group_name="market",
        kinds={"parquet", "polars"},
        retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL),
        description="Closed OHLCV bars per symbol (open time in ms UTC), validated, upserted "
        "incrementally into $LEVIBOT_HOME/ohlcv/{SYMBOL}.parquet.",
    )
    def ohlcv(context: dg.AssetExecutionContext, market: Market) -> dg.MaterializeResult:
        settings = market.settings
        report = ingest_symbol(
            market.build_source(),
            market.store(),
            context.partition_key,
            start_ms=settings.market.start_ms,
            now_ms=now_ms(),
            tf_ms=settings.market.timeframe_ms,
        )
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

    @dg.asset(
        name="cross_asset_features",
        deps=[ohlcv],
        group_name="features",
        kinds={"parquet", "polars", "duckdb"},
        pool=WAREHOUSE_POOL,
        description="One row per (symbol, timestamp) on the grid common to all symbols: the ten "
        "scale-free features of core.data.features plus labels fwd_ret and y_up (horizon "
        "LEVIBOT_LABEL_HORIZON bars). DuckDB view: cross_asset_features.",
    )
    def cross_asset_features(
        context: dg.AssetExecutionContext, market: Market, warehouse: DuckDBResource
    ) -> dg.MaterializeResult:
        settings = market.settings
        store = market.store()
        features = build_features(
            store.read_all_ohlcv(settings.market.symbols),
            tf_ms=settings.market.timeframe_ms,
            horizon=settings.models.label_horizon,
        )
        store.write_features(features)
        with warehouse.get_connection() as conn:
            views = refresh_views(conn, store)
        last = features.get_column("timestamp").max() if features.height else None
        per_symbol = features.group_by("symbol").len().sort("symbol")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": features.height,
                "rows_per_symbol": dg.MetadataValue.json(dict(per_symbol.iter_rows())),
                "first_bar": _ts(
                    features.get_column("timestamp").min() if features.height else None
                ),
                "last_bar": _ts(last),
                "staleness_minutes": staleness_minutes(
                    last, now_ms(), settings.market.timeframe_ms
                ),
                "features": dg.MetadataValue.json(list(FEATURE_COLUMNS)),
                "duckdb_views": dg.MetadataValue.json(views),
                "path": dg.MetadataValue.path(str(store.features_path)),
                "newest_rows": dg.MetadataValue.md(
                    markdown_table(features.group_by("symbol").tail(1).sort("symbol"))
                ),
            }
        )

    return [ohlcv, cross_asset_features]


def build_market_checks(s: Settings) -> list[dg.AssetChecksDefinition]:
    partitions = symbol_partitions(s)

    @dg.asset_check(
        asset="ohlcv",
        name="data_lag",
        partitions_def=partitions,
        description="Staleness of the symbol's newest stored bar in data time (0 while it is the "
        "newest closed bar); warns above LEVIBOT_MAX_STALENESS_MINUTES.",
    )
    def ohlcv_data_lag(
        context: dg.AssetCheckExecutionContext, market: Market
    ) -> dg.AssetCheckResult:
        settings = market.settings
        symbol = context.partition_key
        last = market.store().last_timestamp(symbol)
        stale = staleness_minutes(last, now_ms(), settings.market.timeframe_ms)
        return dg.AssetCheckResult(
            passed=stale <= settings.alerts.max_staleness_minutes,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "symbol": symbol,
                "last_bar": _ts(last),
                "staleness_minutes": stale if last is not None else -1.0,
                "limit_minutes": settings.alerts.max_staleness_minutes,
            },
        )

    @dg.asset_check(
        asset="ohlcv",
        name="gap_report",
        partitions_def=partitions,
        description="Gaps (runs of missing bars) in the symbol's stored series; warns when any.",
    )
    def ohlcv_gap_report(
        context: dg.AssetCheckExecutionContext, market: Market
    ) -> dg.AssetCheckResult:
        settings = market.settings
        ts = market.store().timestamps(context.partition_key)
        gaps, missing = count_gaps(ts, settings.market.timeframe_ms)
        return dg.AssetCheckResult(
            passed=gaps == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"gaps": gaps, "missing_bars": missing, "bars": ts.len()},
        )

    @dg.asset_check(
        asset="cross_asset_features",
        name="schema_and_finite",
        blocking=True,
        description="Columns and dtypes match FEATURE_SCHEMA and no feature is NaN, null or "
        "infinite after the warm-up (labels may be null only where t+h is not known yet).",
    )
    def features_schema_and_finite(market: Market) -> dg.AssetCheckResult:
        features = market.store().read_features()
        schema_ok = dict(features.schema) == FEATURE_SCHEMA
        bad = (
            {
                c: int(n)
                for c, n in features.select(
                    (pl.col(c).is_null() | pl.col(c).is_nan() | pl.col(c).is_infinite()).sum()
                    for c in FEATURE_COLUMNS
                )
                .row(0, named=True)
                .items()
                if n
            }
            if schema_ok
            else {}
        )
        return dg.AssetCheckResult(
            passed=schema_ok and not bad,
            metadata={
                "schema_ok": schema_ok,
                "non_finite_by_column": dg.MetadataValue.json(bad),
                "rows": features.height,
                "unlabelled_rows": int(features.get_column("fwd_ret").null_count())
                if schema_ok
                else -1,
            },
        )

    @dg.asset_check(
        asset="cross_asset_features",
        name="staleness",
        description="Data-time staleness of the table: 0 while it holds the newest closed bar, "
        "otherwise minutes since the first missing bar closed. Warns above "
        "LEVIBOT_MAX_STALENESS_MINUTES (target: under 5).",
    )
    def features_staleness(market: Market) -> dg.AssetCheckResult:
        settings = market.settings
        last = market.store().features_last_timestamp()
        stale = staleness_minutes(last, now_ms(), settings.market.timeframe_ms)
        return dg.AssetCheckResult(
            passed=stale <= settings.alerts.max_staleness_minutes,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "staleness_minutes": stale if last is not None else -1.0,
                "last_bar": _ts(last),
                "limit_minutes": settings.alerts.max_staleness_minutes,
            },
        )

    return [ohlcv_data_lag, ohlcv_gap_report, features_schema_and_finite, features_staleness]


@dg.definitions
def market() -> dg.Definitions:
    s = Settings.from_env()
    return dg.Definitions(assets=build_market_assets(s), asset_checks=build_market_checks(s))
