"""Incremental ingest of one symbol: fetch from the newest stored bar, validate, upsert."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import polars as pl

from levibot_pipelines.adapters.sources import CcxtSource, FilesSource, Source, SyntheticSource
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.core.data.synthetic import PlantedEdge
from levibot_pipelines.core.data.timeframes import data_lag_ms, last_closed_bar
from levibot_pipelines.core.data.validation import count_gaps, validate_ohlcv
from levibot_pipelines.settings import MarketSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    symbol: str
    source: str
    fetched: int
    rows_added: int
    total_rows: int
    first_bar: int | None
    last_bar: int | None
    gaps: int
    missing_bars: int
    rejected: dict[str, int] = field(default_factory=dict)
    data_lag_s: float | None = None

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


def ingest_symbol(
    source: Source,
    store: ParquetStore,
    symbol: str,
    *,
    start_ms: int,
    now_ms: int,
    tf_ms: int,
) -> IngestReport:
    """Bring ``symbol`` up to the newest closed bar at ``now_ms``.

    Fetches from the bar after the newest stored one (or from ``start_ms``), validates every
    page, and upserts the clean bars. If the source fails part-way, the clean bars fetched so far
    are stored before the error propagates, so a retry resumes where it stopped.
    """
    last = store.last_timestamp(symbol)
    since = start_ms if last is None else last + tf_ms
    until = last_closed_bar(now_ms, tf_ms)
    pages: list[pl.DataFrame] = []
    rejected: dict[str, int] = {}
    added = 0
    try:
        if since <= until:
            pages.extend(source.pages(symbol, since, until))
    finally:
        if pages:
            raw = pl.concat(pages, how="vertical_relaxed")
            checked = validate_ohlcv(
                raw, symbol=symbol, source=source.name, tf_ms=tf_ms, last_closed_ms=until
            )
            rejected = checked.rejected
            if rejected:
                log.warning("%s: rejected %s", symbol, rejected)
            added = store.upsert_ohlcv(symbol, checked.bars).added
    stored = store.timestamps(symbol)
    gaps, missing = count_gaps(stored, tf_ms)
    last_bar = stored.max() if stored.len() else None
    return IngestReport(
        symbol=symbol,
        source=source.name,
        fetched=sum(p.height for p in pages),
        rows_added=added,
        total_rows=stored.len(),
        first_bar=stored.min() if stored.len() else None,
        last_bar=last_bar,
        gaps=gaps,
        missing_bars=missing,
        rejected=rejected,
        data_lag_s=None if last_bar is None else data_lag_ms(last_bar, now_ms, tf_ms) / 1000,
    )


def make_source(market: MarketSettings) -> Source:
    """The candle source named by ``market.source`` (LEVIBOT_SOURCE), set up from ``market``."""
    if market.source == "synthetic":
        edge = market.synthetic_edge
        return SyntheticSource(
            start_ms=market.start_ms,
            tf_ms=market.timeframe_ms,
            seed=market.synthetic_seed,
            edge=PlantedEdge.parse(edge) if edge else None,
        )
    if market.source == "files":
        return FilesSource(market.files_dir, market.timeframe)
    return CcxtSource(
        market.exchange,
        timeframe=market.timeframe,
        api_url=market.exchange_api_url,
        retry_seconds=market.source_retry_seconds,
    )
