"""What a publish would do, read from the files alone: which symbols have no trained models yet
and which have a newest bar not published yet. The sensors ask this every few seconds, so it
imports neither torch nor MLflow (``usecases.publish`` does the publishing)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.exported_model import PublishedFileError
from levibot_pipelines.adapters.home import ensemble_weights_path
from levibot_pipelines.adapters.object_store import DataRoot
from levibot_pipelines.adapters.prediction_files import read_latest
from levibot_pipelines.adapters.store import ParquetStore


def missing_models(home: Path, symbols: tuple[str, ...]) -> list[str]:
    """Symbols without fitted ensemble weights (the training job's last step): nothing to
    publish for them yet."""
    return [s for s in symbols if not ensemble_weights_path(home, s).exists()]


def unpublished_symbols(
    home: Path, symbols: tuple[str, ...], root: DataRoot | None = None
) -> list[str]:
    """Symbols whose newest feature row is not the bar last published for them (all of them
    when nothing readable is published yet): what a publish would add. A feature rebuild that
    brought no new bar leaves none, and publishing again would only repeat the same bars.
    ``root``: where the features and the published rows are (default: the home)."""
    try:
        latest = read_latest(home if root is None else root)
    except PublishedFileError:
        return list(symbols)  # a corrupt or older file: a publish replaces it
    if latest is None:
        return list(symbols)
    newest = dict(
        ParquetStore(home, root)
        .read_features(columns=["symbol", "timestamp"])
        .group_by("symbol")
        .agg(pl.col("timestamp").max())
        .iter_rows()
    )
    published = {s: row["bar_time"] for s, row in latest.rows.items()}
    return [s for s in symbols if s not in published or published[s] != newest.get(s)]
