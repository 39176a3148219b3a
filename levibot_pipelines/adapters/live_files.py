"""Live scores on disk: the append-only scored history and the rolling summary.

Layout (``adapters.home``):

- ``live/scores/scores-{now}-{uuid8}.parquet``: one file per scoring run that found newly
  matured predictions, holding only those rows (``core.evaluation.live_scoring.SCORED_SCHEMA``);
  never rewritten. The history is the union of the files.
- ``live/shadow_scores/``: the same for the shadow challengers' published rows
  (``shadow=True``), whose scores appear in the summary as ``shadow_{model}``.
- ``live/summary.json``: the rolling scores per symbol and model and the paper P&L per symbol
  (``{"updated_at": ms, "window": N, "horizon": h, "symbols": {SYMBOL: {...}}}``, built by
  ``usecases.live_scores``), replaced on every run.

Both are written atomically (temporary sibling + ``os.replace``, ``adapters.store``). A file
that cannot be read is a ``LiveFileError`` naming it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from levibot_pipelines.adapters.home import (
    live_scores_dir,
    live_shadow_scores_dir,
    live_summary_path,
)
from levibot_pipelines.adapters.store import json_safe, write_parquet_atomic, write_text_atomic
from levibot_pipelines.core.evaluation.live_scoring import SCORED_SCHEMA

SUMMARY_KEYS = ("updated_at", "window", "horizon", "symbols")


class LiveFileError(ValueError):
    """A live-scoring file under LEVIBOT_HOME is corrupt, truncated or of another layout."""


def _scores_dir(home: Path | str, shadow: bool) -> Path:
    return live_shadow_scores_dir(home) if shadow else live_scores_dir(home)


def write_scores(
    home: Path | str, rows: pl.DataFrame, now_ms: int, *, shadow: bool = False
) -> Path | None:
    """Append ``rows`` (``SCORED_SCHEMA``) as a new file ``scores-{now_ms}-{uuid8}.parquet``
    (with ``shadow``: under ``live/shadow_scores``); None (nothing written) when ``rows`` is
    empty. ``ValueError`` when the columns differ."""
    if list(rows.columns) != list(SCORED_SCHEMA):
        raise ValueError(f"scored rows must have columns {list(SCORED_SCHEMA)}, got {rows.columns}")
    if rows.is_empty():
        return None
    path = _scores_dir(home, shadow) / f"scores-{now_ms}-{uuid.uuid4().hex[:8]}.parquet"
    write_parquet_atomic(rows.cast(SCORED_SCHEMA), path)
    return path


def _read_one(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, schema=SCORED_SCHEMA)
    except (pl.exceptions.PolarsError, OSError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise LiveFileError(
            f"live scores file {path} cannot be read ({type(exc).__name__}: {detail}); it is "
            "corrupt or truncated: move it aside (its bars are scored again on the next run)"
        ) from None


def read_scores(home: Path | str, *, shadow: bool = False) -> pl.DataFrame:
    """Every scored row (with ``shadow``: of the shadow challengers), in file order
    (``SCORED_SCHEMA``; empty when none). ``LiveFileError`` naming the first file that cannot
    be read."""
    files = sorted(_scores_dir(home, shadow).glob("scores-*.parquet"))
    if not files:
        return pl.DataFrame(schema=SCORED_SCHEMA)
    try:
        return pl.read_parquet(files, schema=SCORED_SCHEMA)
    except (pl.exceptions.PolarsError, OSError):
        return pl.concat([_read_one(f) for f in files])  # raises naming the bad file


def write_summary(home: Path | str, summary: dict[str, Any]) -> Path:
    """Replace ``live/summary.json`` with ``summary`` (NaN written as null); returns its path."""
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        raise ValueError(f"live summary lacks keys {missing}")
    path = live_summary_path(home)
    write_text_atomic(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", path)
    return path


def parse_summary(text: str, source: str = "summary.json") -> dict[str, Any]:
    """The summary document; ``LiveFileError`` naming ``source`` when it is not one."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LiveFileError(
            f"{source} is not valid JSON ({exc.msg} at char {exc.pos}): half-written or corrupt"
        ) from None
    if not isinstance(doc, dict) or any(k not in doc for k in SUMMARY_KEYS):
        raise LiveFileError(f"{source}: expected a JSON object with keys {list(SUMMARY_KEYS)}")
    symbols = doc["symbols"]
    if not isinstance(symbols, dict) or not all(_symbol_entry(v) for v in symbols.values()):
        raise LiveFileError(
            f"{source}: 'symbols' must map each symbol to an object whose 'models' maps each "
            "model to an object of scores"
        )
    return doc


def _symbol_entry(entry: Any) -> bool:
    models = entry.get("models") if isinstance(entry, dict) else None
    return isinstance(models, dict) and all(isinstance(s, dict) for s in models.values())


def read_summary(home: Path | str) -> dict[str, Any] | None:
    """The live summary; None when nothing was scored yet; ``LiveFileError`` when unreadable."""
    path = live_summary_path(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_summary(text, str(path))
