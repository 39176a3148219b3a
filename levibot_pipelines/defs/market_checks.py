"""Checks of the market-data assets: per-symbol data lag and gaps on ``ohlcv``; schema,
finiteness and data-time staleness of ``cross_asset_features``."""

import dagster as dg

from levibot_pipelines.core.data.features import FEATURE_COLUMNS, FEATURE_SCHEMA
from levibot_pipelines.core.data.timeframes import staleness_minutes
from levibot_pipelines.core.data.validation import count_gaps, non_finite_counts
from levibot_pipelines.defs.common import now_ms, symbol_partitions
from levibot_pipelines.defs.common import timestamp_metadata as _ts
from levibot_pipelines.defs.resources import Market
from levibot_pipelines.settings import Settings


def build_market_checks(s: Settings) -> list[dg.AssetChecksDefinition]:
    """Every market-data check: the per-symbol ones on ``ohlcv`` (partitioned like it) and the
    feature table's."""
    return [*_ohlcv_checks(symbol_partitions(s)), features_schema_and_finite, features_staleness]


def _ohlcv_checks(partitions: dg.StaticPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
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

    return [ohlcv_data_lag, ohlcv_gap_report]


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
    bad = non_finite_counts(features, FEATURE_COLUMNS) if schema_ok else {}
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


@dg.definitions
def market_checks() -> dg.Definitions:
    return dg.Definitions(asset_checks=build_market_checks(Settings.from_env()))
