"""Rebuilding the cross-asset feature table from every symbol's stored bars."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.features import build_features


@dataclass(frozen=True)
class FeatureBuild:
    """The stored table, its newest bar (ms UTC open time; None when empty) and rows per
    symbol."""

    features: pl.DataFrame
    first_bar: int | None
    last_bar: int | None
    rows_per_symbol: dict[str, int]


def rebuild_features(
    store: ParquetStore, symbols: tuple[str, ...] | list[str], *, tf_ms: int, horizon: int
) -> FeatureBuild:
    """Build the feature table (``core.data.features.build_features``: the grid common to all
    ``symbols``, labels over ``horizon`` bars) from the stored bars and replace the stored table
    atomically. Raises naming the symbols that have no stored bars."""
    features = build_features(store.read_all_ohlcv(symbols), tf_ms=tf_ms, horizon=horizon)
    store.write_features(features)
    ts = features.get_column("timestamp")
    per_symbol = features.group_by("symbol").len().sort("symbol")
    return FeatureBuild(
        features=features,
        first_bar=int(ts.min()) if features.height else None,
        last_bar=int(ts.max()) if features.height else None,
        rows_per_symbol=dict(per_symbol.iter_rows()),
    )
