"""What every defs module shares: the DuckDB writer pool, the symbol partitions, the clock, the
period of a cron schedule, and the small metadata formatters (Markdown tables, timestamps,
images) shown in the Dagster UI."""

import base64
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import dagster as dg
import duckdb
import polars as pl
from dagster._utils.schedules import (  # the cron arithmetic Dagster's schedules use (pinned)
    cron_string_iterator,
    is_valid_cron_string,
)
from dagster_duckdb import DuckDBResource

from levibot_pipelines.adapters.redact import redact_url
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


# The Dagster UI shows Markdown metadata shorter than this inline; longer Markdown (any embedded
# base64 image) sits behind "[Show Markdown]" (dagster-webserver 1.13, MetadataEntry).
MARKDOWN_INLINE_LIMIT = 1000


def image_md(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in Markdown metadata as base64: far over ``MARKDOWN_INLINE_LIMIT``, so the
    UI shows it behind "[Show Markdown]"; the copy that needs no other service."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def mlflow_images_md(run_url: str, images: Mapping[str, str]) -> dg.MetadataValue:
    """Markdown showing PNG artifacts of an MLflow run, ``{caption: artifact path}``, as images
    served by the MLflow UI's ``/get-artifact`` route at the base of ``run_url`` (a run page,
    ``{base}/#/experiments/{id}/runs/{run_id}``; the base redacted like every shown URL). Short
    enough to be shown inline in the Dagster UI; the images load while the MLflow UI runs
    (``mlflow ui --backend-store-uri sqlite:///.levibot/mlflow.db``), else their captions show.
    ``ValueError`` when ``run_url`` is not a run page."""
    base, sep, page = run_url.partition("/#/")
    run_id = page.rpartition("/runs/")[2]
    if not sep or "/runs/" not in page or not run_id.isalnum():
        raise ValueError(f"not an MLflow run page: {redact_url(run_url)!r}")
    base = redact_url(base)
    lines = [
        f"![{caption}]({base}/get-artifact?path={quote(path)}&run_uuid={run_id})"
        for caption, path in images.items()
    ]
    return dg.MetadataValue.md("\n\n".join(lines))


SUMMARY_ROWS = ("policy (ensemble)", "  at 2x costs", "  random, same turnover", "buy and hold")


def backtest_summary_md(bt: dict) -> str:
    """The policy backtest's key rows (``adapters.reports.backtest_rows``: the ensemble policy,
    the same at 2x costs, a random policy of the same turnover, buy-and-hold) in a Markdown
    table short enough for the Dagster UI to show inline; the full table is
    ``adapters.reports.backtest_markdown``."""
    from levibot_pipelines.adapters.reports import backtest_rows  # heavy: see defs.models

    rows = backtest_rows(bt)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    lines = ["| strategy | Sharpe | max DD | trades | total return |", "|---|---|---|---|---|"]
    for name in SUMMARY_ROWS:
        m = rows[name]
        sharpe = "-" if m.get("sharpe") is None else f"{m['sharpe']:.2f}"
        cells = [sharpe, pct(m.get("max_drawdown")), str(m.get("n_trades", "-"))]
        lines.append(
            f"| {name.strip()} | " + " | ".join([*cells, pct(m.get("total_return"))]) + " |"
        )
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


# A fixed start, so a cron's period does not depend on when the code location loads.
_CRON_SAMPLE_START = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
_CRON_SAMPLE_TICKS = 500


def cron_period(cron: str, timezone: str = "UTC") -> timedelta:
    """The longest gap between two consecutive ticks of ``cron`` (in ``timezone``) over 500
        ticks from 2026-01-05: ``"1-59/15 * * * *"`` -> 15 minutes, ``"30 0 * * *"`` -> 1 day,
        ``"0 9 * * 1-5"`` -> 3 days (elapsed time: a daily cron in a zone with daylight saving time
    gives 25 hours). ``ValueError`` naming the cron when Dagster cannot read it."""
    if not is_valid_cron_string(cron):
        raise ValueError(f"cron {cron!r} is not a cron string Dagster can schedule")
    ticks = cron_string_iterator(_CRON_SAMPLE_START, cron, timezone)
    times = [next(ticks).timestamp() for _ in range(_CRON_SAMPLE_TICKS)]  # elapsed, across DST
    return timedelta(seconds=max(b - a for a, b in zip(times, times[1:], strict=False)))
