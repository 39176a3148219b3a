"""What ``levibot ingest`` and ``levibot train`` print: the feature table's path, shape and
symbols; a Transformer training's epochs and its best epoch.

Reads only (the feature table through ``adapters.store``); returns small records that the CLI
prints. Times are ms UTC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.store import ParquetStore


@dataclass(frozen=True)
class FeatureTable:
    """The cross-asset feature table on disk: its ``path`` (Parquet, the source of truth),
    ``rows`` x ``columns``, rows per symbol (symbols sorted) and its first/last bar (ms UTC)."""

    path: Path | str  # a Path under the home, or an s3:// URL
    rows: int
    columns: int
    rows_per_symbol: dict[str, int]
    first_bar: int | None
    last_bar: int | None

    @property
    def symbols(self) -> list[str]:
        return list(self.rows_per_symbol)


def feature_table(store: ParquetStore) -> FeatureTable | None:
    """The stored feature table's :class:`FeatureTable`; None when it has not been built yet."""
    path = store.features_path
    if not store.has_features():
        return None
    frame = store.read_features().lazy()
    columns = frame.collect_schema().len()
    per_symbol = frame.group_by("symbol").agg(pl.len()).sort("symbol").collect()
    span = frame.select(pl.col("timestamp").min().alias("a"), pl.col("timestamp").max().alias("b"))
    first, last = span.collect().row(0)
    counts = dict(zip(per_symbol["symbol"].to_list(), per_symbol["len"].to_list(), strict=True))
    return FeatureTable(
        path=path,
        rows=sum(counts.values()),
        columns=columns,
        rows_per_symbol=counts,
        first_bar=first,
        last_bar=last,
    )


def symbols_with_features(store: ParquetStore) -> list[str]:
    """The symbols that have rows in the feature table (sorted); empty when it is not built."""
    table = feature_table(store)
    return table.symbols if table is not None else []


def best_epoch(history: Sequence[Mapping[str, float]]) -> Mapping[str, float]:
    """The epoch record with the lowest ``val_loss``, the first on ties: the epoch whose
    weights the Transformer's training restores and registers (``core.models.
    transformer_training``). ``ValueError`` on an empty history."""
    if not history:
        raise ValueError("no epoch was recorded: the Transformer was not trained")
    return min(history, key=lambda record: record["val_loss"])
