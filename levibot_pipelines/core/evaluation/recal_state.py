"""The live recalibration's state: the maps fitted on matured live predictions, their stages,
and which map a published row was served under. Pure: JSON-safe dicts in, new dicts out
(``adapters.recal_files`` reads and writes the document; ``core.evaluation.recalibration``
holds the statistics).

The document (``$LEVIBOT_HOME/live/recalibration.json``)::

    {"format": 1, "updated_at": ms,
     "maps": [MAP, ...],                   every map ever fitted, oldest first: the history
     "drift": {SYMBOL: {MODEL: {...}}}}    the newest drift probe per symbol and model

A MAP (``MAP_KEYS``) belongs to one ``symbol``, one ``model`` (``MODELS``) and the model
``versions`` whose published rows it was fitted on (``VERSION_COLUMNS``: ``lgbm_version``,
``deep_version``, both for the ensemble). ``calibrator`` is a Platt map
(``core.models.calibration.Calibrator.to_dict``; slope ``a > 0`` but in a map rejected at its
fit) from the model's own ``P(up)`` (what the publisher computes) to the recalibrated one. Its
``stage`` (``STAGES``):

- ``candidate``: fitted, in its shadow period (scored as ``recal_{model}`` on the bars that
  matured after its fit), never published; at most one per symbol and model;
- ``active``: passed its shadow period; the publisher applies it; at most one per symbol and
  model;
- ``rejected``: failed its shadow period, or the versions changed before it ended, or its
  fitted slope was not positive;
- ``retired``: was active, then replaced by a newer active map or no longer of the published
  versions.

``events`` lists every stage a map took: ``{"at": ms, "stage", "reason", "run_id"}`` (the
MLflow run that logged it).

Which map a published row was served under (``served_map``): the map of its symbol and model
whose ``versions`` are the row's and with ``effective_from <= published_at < retired_from``
(``retired_from`` null: not retired); with several, the newest ``effective_from``; none: the row
holds the model's own probability. The publisher applies the same rule at its publish time
(``published_at``), so the two agree. A map becomes effective ``ACTIVATION_DELAY_MS`` after the
clock of the run that activated it, and the map it replaces stops then: a publish that read the
state file before that run replaced it had a clock before the switch, given that the run writes
within the delay.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

FORMAT = 1
MODELS: tuple[str, ...] = ("lgbm", "deep", "ensemble")
STAGES: tuple[str, ...] = ("candidate", "active", "rejected", "retired")
VERSION_COLUMNS: dict[str, tuple[str, ...]] = {
    "lgbm": ("lgbm_version",),
    "deep": ("deep_version",),
    "ensemble": ("lgbm_version", "deep_version"),
}
ACTIVATION_DELAY_MS = 60_000
MAP_KEYS: tuple[str, ...] = (
    "id",
    "symbol",
    "model",
    "stage",
    "versions",
    "calibrator",
    "fitted_at",
    "n_fit",
    "first_bar",
    "last_bar",
    "fit",
    "shadow",
    "effective_from",
    "retired_from",
    "events",
)
_INTS = ("fitted_at", "n_fit", "first_bar", "last_bar")
_OPTIONAL_INTS = ("effective_from", "retired_from")


def empty_state() -> dict[str, Any]:
    """A state without maps or drift probes."""
    return {"format": FORMAT, "updated_at": 0, "maps": [], "drift": {}}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_map(m: Any) -> str | None:
    """What is wrong with one map record; None when nothing."""
    if not isinstance(m, dict) or set(m) != set(MAP_KEYS):
        got = sorted(m) if isinstance(m, dict) else type(m).__name__
        return f"a map must have the keys {list(MAP_KEYS)}, got {got}"
    name = f"map {m['id']!r}"
    if m["model"] not in MODELS or m["stage"] not in STAGES:
        return f"{name}: model {m['model']!r} / stage {m['stage']!r} not in {MODELS} / {STAGES}"
    versions = m["versions"]
    if not isinstance(versions, dict) or set(versions) != set(VERSION_COLUMNS[m["model"]]):
        return f"{name}: versions must hold {list(VERSION_COLUMNS[m['model']])}, got {versions}"
    cal = m["calibrator"]
    if not (isinstance(cal, dict) and cal.get("method") == "platt" and _number(cal.get("a"))):
        return f"{name}: calibrator must be a Platt map, got {cal}"
    if not _number(cal.get("b")) or (cal["a"] <= 0 and m["stage"] != "rejected"):
        return f"{name}: a {m['stage']} Platt map needs a > 0 and a finite b, got {cal}"
    bad = [k for k in _INTS if not _is_int(m[k])]
    bad += [k for k in _OPTIONAL_INTS if m[k] is not None and not _is_int(m[k])]
    if bad:
        return f"{name}: {bad} must be integers (ms UTC or counts)"
    if not isinstance(m["events"], list) or not all(isinstance(e, dict) for e in m["events"]):
        return f"{name}: events must be a list of objects"
    if m["stage"] == "active" and m["effective_from"] is None:
        return f"{name}: an active map needs effective_from"
    return None


def check_state(doc: Any) -> dict[str, Any]:
    """``doc`` when it is a state document (module docstring); ``ValueError`` naming the first
    problem otherwise."""
    keys = {"format", "updated_at", "maps", "drift"}
    if not isinstance(doc, dict) or set(doc) != keys:
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"expected a JSON object with keys {sorted(keys)}, got {got}")
    if doc["format"] != FORMAT:
        raise ValueError(f"format {doc['format']!r}, expected {FORMAT}")
    if not isinstance(doc["maps"], list):
        raise ValueError("'maps' must be a list")
    for m in doc["maps"]:
        problem = _check_map(m)
        if problem:
            raise ValueError(problem)
    ids = [m["id"] for m in doc["maps"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"map ids must be unique, got {ids}")
    for stage in ("candidate", "active"):
        keys_seen = [(m["symbol"], m["model"]) for m in doc["maps"] if m["stage"] == stage]
        if len(set(keys_seen)) != len(keys_seen):
            raise ValueError(f"more than one {stage} map of a symbol and model: {keys_seen}")
    drift = doc["drift"]
    if not isinstance(drift, dict) or not all(
        isinstance(v, dict) and all(isinstance(d, dict) for d in v.values()) for v in drift.values()
    ):
        raise ValueError("'drift' must map each symbol to an object of objects per model")
    return doc


def versions_of(row: Mapping[str, Any], model: str) -> dict[str, str]:
    """The versions of ``model`` (``VERSION_COLUMNS``) in a published ``row``."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return {c: str(row[c]) for c in VERSION_COLUMNS[model]}


def maps_of(
    maps: list[dict], symbol: str, model: str, stage: str | None = None
) -> list[dict[str, Any]]:
    """The maps of ``symbol`` and ``model`` (of ``stage`` when given), oldest first."""
    return [
        m
        for m in maps
        if m["symbol"] == symbol and m["model"] == model and stage in (None, m["stage"])
    ]


def the_map(maps: list[dict], symbol: str, model: str, stage: str) -> dict[str, Any] | None:
    """The one map of ``stage`` (``candidate`` or ``active``) of ``symbol`` and ``model``."""
    found = maps_of(maps, symbol, model, stage)
    return found[-1] if found else None


def ever_served(
    maps: list[dict], symbol: str, model: str, versions: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The maps of ``symbol`` and ``model`` that were ever effective for ``versions``, oldest
    ``effective_from`` first: the only maps a row of those versions can have been served
    under; the newest one covering a publish time wins (``served_map``)."""
    want = {c: str(versions[c]) for c in VERSION_COLUMNS[model]}
    found = [
        m
        for m in maps_of(maps, symbol, model)
        if m["effective_from"] is not None and m["versions"] == want
    ]
    return sorted(found, key=lambda m: m["effective_from"])


def covers(m: Mapping[str, Any], at: int) -> bool:
    """Whether map ``m`` was effective at ``at`` (ms UTC): ``effective_from <= at <
    retired_from``."""
    return m["effective_from"] <= at and (m["retired_from"] is None or at < m["retired_from"])


def served_map(
    maps: list[dict], symbol: str, model: str, versions: Mapping[str, str], at: int
) -> dict[str, Any] | None:
    """The map a row of ``symbol`` with ``versions`` published at ``at`` (ms UTC) was served
    under (module docstring); None: the model's own probability."""
    found = [m for m in ever_served(maps, symbol, model, versions) if covers(m, at)]
    return found[-1] if found else None


def last_fit_at(maps: list[dict], symbol: str, model: str) -> int | None:
    """When ``symbol``'s ``model`` was last fitted (ms UTC), whatever became of the map."""
    times = [m["fitted_at"] for m in maps_of(maps, symbol, model)]
    return max(times) if times else None


def fit_due(last: int | None, now_ms: int, interval_ms: int) -> bool:
    """Whether a fit at ``now_ms`` respects the rate limit: never fitted, or at least
    ``interval_ms`` since the ``last`` fit (the stored fit time, not a schedule)."""
    if interval_ms <= 0:
        raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
    return last is None or now_ms - last >= interval_ms


def next_id(maps: list[dict], symbol: str, model: str) -> str:
    """``{symbol}-{model}-{k}``, ``k`` one more than the maps of that symbol and model."""
    return f"{symbol}-{model}-{len(maps_of(maps, symbol, model)) + 1}"


def with_stage(
    m: dict[str, Any], stage: str, at: int, reason: str, run_id: str | None = None, **changes: Any
) -> dict[str, Any]:
    """A copy of map ``m`` in ``stage`` with the event recorded and ``changes`` applied."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    unknown = set(changes) - set(MAP_KEYS)
    if unknown:
        raise ValueError(f"unknown map keys {sorted(unknown)}")
    out = copy.deepcopy(m) | changes | {"stage": stage}
    out["events"] = [*out["events"], {"at": at, "stage": stage, "reason": reason, "run_id": run_id}]
    return out


def replace_map(maps: list[dict], new: dict[str, Any]) -> list[dict[str, Any]]:
    """``maps`` with the map of ``new``'s id replaced by ``new`` (appended when new)."""
    if not any(m["id"] == new["id"] for m in maps):
        return [*maps, new]
    return [new if m["id"] == new["id"] else m for m in maps]
