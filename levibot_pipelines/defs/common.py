"""What every defs module shares: the DuckDB writer pool, the symbol partitions, the clock, and
the small metadata formatters (Markdown tables, timestamps) shown in the Dagster UI."""

import logging
import time
from collections.abc import Callable

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

from levibot_pipelines.settings import Settings

# DuckDB allows one writer process: every step that writes warehouse.duckdb takes this pool.
WAREHOUSE_POOL = "duckdb_writer"
LOCK_CONFLICT = "Could not set lock on file"  # duckdb.IOException: another process holds it


def now_ms() -> int:
    return int(time.time() * 1000)


def symbol_partitions(s: Settings) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(s.market.symbols))


def timestamp_metadata(ms: int | None) -> dg.MetadataValue | None:
    """A ms UTC timestamp as Dagster timestamp metadata; None stays None."""
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


def refresh_warehouse_views(
    warehouse: DuckDBResource, refresh: Callable[[duckdb.DuckDBPyConnection], list[str]]
) -> list[str] | str:
    """``refresh(conn)`` on a warehouse connection: the names of the views it (re)created.

    The views only read the Parquet files the asset has already replaced (the source of
    truth), so a lock held by another process (``duckdb.IOException`` "Could not set lock on
    file", after ``DuckDBResource``'s own retries) is not fatal: it is logged as a warning and
    returned as ``"not refreshed: <reason>"`` for the metadata. Any other error is raised.
    """
    try:
        with warehouse.get_connection() as conn:
            return refresh(conn)
    except duckdb.IOException as exc:
        if LOCK_CONFLICT not in str(exc):
            raise
        logging.getLogger(__name__).warning(
            "DuckDB views not refreshed (the Parquet files are up to date): %s", exc
        )
        return f"not refreshed: {exc}"
