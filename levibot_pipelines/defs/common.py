"""What every defs module shares: the DuckDB writer pool, the symbol partitions, the clock, and
the small metadata formatters (Markdown tables, timestamps) shown in the Dagster UI."""

import time

import dagster as dg
import polars as pl

from levibot_pipelines.settings import Settings

# DuckDB allows one writer process: every step that writes warehouse.duckdb takes this pool.
WAREHOUSE_POOL = "duckdb_writer"


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
