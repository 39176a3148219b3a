"""Live recalibration (behind the ``live_recalibration`` asset, after ``live_scores``): per
symbol and model (``lgbm``, ``deep``, ``ensemble``) a Platt map refitted on the matured live
predictions, judged in a shadow period, then applied by the publisher; and the calibration
drift of what is served. The rules are ``core.evaluation.recalibration`` (statistics) and
``core.evaluation.recal_state`` (stages, which map served a row); the state lives in
``$LEVIBOT_HOME/live/recalibration.json`` (``adapters.recal_files``).

Each run (``recalibrate``), per configured symbol with published rows, per model, in order:

1. a ``candidate`` or ``active`` map of versions the symbol no longer publishes is ``rejected``
   or ``retired``;
2. the candidate, if any, is judged on the bars matured after its fit (``judge``): it stays
   ``candidate`` until ``LEVIBOT_RECAL_SHADOW_BARS`` such bars, then becomes ``active``
   (effective ``ACTIVATION_DELAY_MS`` later; the active map it replaces is ``retired`` then) or
   ``rejected``;
3. the drift probe on the newest ``LEVIBOT_RECAL_MIN_BARS`` matured bars of the current
   versions (fewer: none, with the number missing);
4. a fit, when there is no candidate, at least ``LEVIBOT_RECAL_INTERVAL_HOURS`` passed since the
   stored fit time of that symbol's model, and ``LEVIBOT_RECAL_MIN_BARS`` matured bars of the
   current versions exist (fewer: no fit, and a note says how many are missing). The new map is a
   ``candidate`` (``rejected`` at once when its slope is not positive).

Every fit and every stage change is logged as an MLflow run of the experiment (tags ``symbol``,
``kind`` ``recalibration``) before the state file is written with the run's id in the map's
``events``: a failed logging run writes nothing, and the next run starts from the same state.

The publisher applies the active maps (``recalibrate_published``) to the published ``{m}_p_up``
only, after the decision engine decided on the models' own probabilities (the policy's
expected-return map was fitted on them). Live scoring scores each candidate as ``recal_{m}``
(``candidate_scores``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from levibot_pipelines.adapters.live_files import read_scores
from levibot_pipelines.adapters.object_store import open_root
from levibot_pipelines.adapters.prediction_files import read_history
from levibot_pipelines.adapters.recal_files import RecalFileError, read_state, write_state
from levibot_pipelines.core.evaluation.live_scoring import window_scores
from levibot_pipelines.core.evaluation.recal_state import (
    ACTIVATION_DELAY_MS,
    MODELS,
    fit_due,
    last_fit_at,
    next_id,
    replace_map,
    served_map,
    the_map,
    versions_of,
    with_stage,
)
from levibot_pipelines.core.evaluation.recalibration import (
    after_fit,
    calibrator,
    current_versions,
    drift,
    fit_map,
    judge,
    labelled_rows,
    of_versions,
    recalibrated,
    served_rows,
    window_start,
)
from levibot_pipelines.settings import Settings

if TYPE_CHECKING:
    from levibot_pipelines.adapters.tracking import Tracker

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
TABLE_COLUMNS = ("symbol", "model", "active", "candidate", "bars", "missing", "shift", "drifted")


@dataclass(frozen=True)
class RecalConfig:
    """What recalibration needs from the settings: the ``symbols``, the label ``horizon``
    (bars), ``min_bars`` (fit window), ``interval_ms`` (least time between fits) and
    ``shadow_bars`` (shadow period); ``data_url``: where the published rows are (None: the
    home)."""

    symbols: tuple[str, ...]
    horizon: int
    min_bars: int
    interval_ms: int
    shadow_bars: int
    data_url: str | None = None


def recal_config(s: Settings) -> RecalConfig:
    """The ``RecalConfig`` of ``s`` (``LEVIBOT_RECAL_*``, ``LEVIBOT_LABEL_HORIZON``)."""
    return RecalConfig(
        symbols=s.market.symbols,
        horizon=s.models.label_horizon,
        min_bars=s.serving.recal_min_bars,
        interval_ms=round(s.serving.recal_interval_hours * HOUR_MS),
        shadow_bars=s.serving.recal_shadow_bars,
        data_url=s.market.data_url,
    )


@dataclass
class RecalResult:
    """One run: the state file's ``path``, ``table`` (per symbol and model: ``TABLE_COLUMNS``),
    the ids of the maps ``fitted``, the stage ``changes`` (``"id: stage (reason)"``), the
    ``drifted`` ``SYMBOL/model`` pairs and ``notes``."""

    path: Path
    table: pl.DataFrame
    fitted: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _log_run(tracker: Tracker, m: dict, stage: str, reason: str, metrics: dict[str, float]) -> str:
    """An MLflow run for map ``m`` taking ``stage``; returns its id."""
    cal = m["calibrator"]
    params = {
        "symbol": m["symbol"],
        "model": m["model"],
        "map_id": m["id"],
        "stage": stage,
        "reason": reason,
        "n_bars": m["n_fit"],
        "window": {"first_bar": m["first_bar"], "last_bar": m["last_bar"]},
        "method": cal["method"],
        "platt_a": cal["a"],
        "platt_b": cal["b"],
        "versions": m["versions"],
    }
    finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    run = tracker.log_training_run(
        run_name=f"recalibration {m['id']} {stage}",
        params=params,
        metrics=finite,
        tags={"symbol": m["symbol"], "kind": "recalibration"},
    )
    return run.run_id


class _Run:
    """One ``recalibrate`` run's mutable working set: the maps, the tracker, the result."""

    def __init__(self, state: dict, tracker: Tracker, cfg: RecalConfig, now_ms: int) -> None:
        self.maps: list[dict] = list(state["maps"])
        self.drift: dict[str, dict] = {}
        self.tracker, self.cfg, self.now = tracker, cfg, now_ms
        self.fitted: list[str] = []
        self.changes: list[str] = []
        self.notes: list[str] = []

    def stage(self, m: dict, stage: str, reason: str, metrics: dict | None = None, **kw) -> dict:
        """Log ``m`` taking ``stage`` to MLflow, record the event, keep the new map."""
        run_id = _log_run(self.tracker, m, stage, reason, metrics or {})
        new = with_stage(m, stage, self.now, reason, run_id, **kw)
        self.maps = replace_map(self.maps, new)
        self.changes.append(f"{m['id']}: {stage} ({reason})")
        return new

    def retire_stale(self, symbol: str, model: str, versions: dict[str, str]) -> None:
        """Step 1: candidate / active maps of versions no longer published."""
        current = versions_of(versions, model)
        why = f"the published versions are now {current}"
        cand = the_map(self.maps, symbol, model, "candidate")
        if cand and cand["versions"] != current:
            self.stage(cand, "rejected", f"superseded before its shadow period ended: {why}")
        act = the_map(self.maps, symbol, model, "active")
        if act and act["versions"] != current:
            until = self.now + ACTIVATION_DELAY_MS
            self.stage(act, "retired", why, retired_from=until)

    def judge_candidate(self, symbol: str, model: str, rows: pl.DataFrame) -> None:
        """Step 2: the candidate's shadow period; activation retires the active map."""
        cand = the_map(self.maps, symbol, model, "candidate")
        if cand is None:
            return
        after = after_fit(rows, cand["last_bar"])
        j = judge(after, calibrator(cand["calibrator"]), self.cfg.horizon, self.cfg.shadow_bars)
        shadow = {k: v for k, v in asdict(j).items() if k not in ("stage", "reason")}
        metrics = {f"shadow_{k}": v for k, v in shadow.items()}
        if j.stage == "candidate":
            self.maps = replace_map(self.maps, cand | {"shadow": shadow})
            return
        if j.stage == "rejected":
            self.stage(cand, "rejected", j.reason, metrics, shadow=shadow)
            return
        start = self.now + ACTIVATION_DELAY_MS
        act = the_map(self.maps, symbol, model, "active")
        if act:
            self.stage(act, "retired", f"replaced by {cand['id']}", retired_from=start)
        self.stage(cand, "active", j.reason, metrics, shadow=shadow, effective_from=start)

    def since(self, mine: pl.DataFrame, symbol: str, model: str) -> int:
        """The oldest bar steps 2 to 4 need of ``mine`` (``of_versions``'s rows): the newest
        ``min_bars`` and those after the candidate's fit (0: every row)."""
        start = window_start(mine, self.cfg.min_bars)
        cand = the_map(self.maps, symbol, model, "candidate")
        if start is None:
            return 0
        return min(start, cand["last_bar"] + 1) if cand else start

    def probe(self, symbol: str, model: str, rows: pl.DataFrame, n_all: int) -> None:
        """Step 3: the drift probe (``drift`` of the state, per symbol and model); ``n_all``:
        the matured bars of the current versions."""
        need = self.cfg.min_bars
        entry: dict[str, Any] = {"at": self.now, "bars": n_all, "needed": need}
        entry["missing"] = max(0, need - n_all)
        try:
            d = drift(rows, need, self.cfg.horizon)
            entry |= asdict(d)
        except ValueError as exc:
            entry |= {"max_abs_shift": None, "drifted": False, "reason": str(exc)}
        self.drift.setdefault(symbol, {})[model] = entry

    def fit(self, symbol: str, model: str, rows: pl.DataFrame, versions: dict) -> None:
        """Step 4: a new map when due (module docstring)."""
        if the_map(self.maps, symbol, model, "candidate"):
            return
        last = last_fit_at(self.maps, symbol, model)
        if not fit_due(last, self.now, self.cfg.interval_ms):
            return
        try:
            f = fit_map(rows, self.cfg.min_bars)
        except ValueError as exc:
            self.notes.append(f"{symbol} {model}: no fit: {exc}")
            return
        m = _new_map(self.maps, symbol, model, versions_of(versions, model), f, self.now)
        metrics = dict(m["fit"])
        if f.calibrator.a > 0:
            self.stage(m, "candidate", f"fitted on {f.n} matured bars", metrics)
        else:
            why = f"fitted slope a = {f.calibrator.a:.4g} <= 0 would reverse the ranking"
            self.stage(m, "rejected", why, metrics)
        self.fitted.append(m["id"])


def _new_map(
    maps: list[dict], symbol: str, model: str, versions: dict, f: Any, now_ms: int
) -> dict[str, Any]:
    """The record of a map just fitted (``f``: ``MapFit``), with no event yet."""
    fit = {k: getattr(f, k) for k in ("log_loss_before", "log_loss_after", "log_loss_raw")}
    return {
        "id": next_id(maps, symbol, model),
        "symbol": symbol,
        "model": model,
        "stage": "candidate",
        "versions": versions,
        "calibrator": f.calibrator.to_dict(),
        "fitted_at": now_ms,
        "n_fit": f.n,
        "first_bar": f.first_bar,
        "last_bar": f.last_bar,
        "fit": fit,
        "shadow": None,
        "effective_from": None,
        "retired_from": None,
        "events": [],
    }


def recalibrate(home: Path, tracker: Tracker, cfg: RecalConfig, now_ms: int) -> RecalResult:
    """One recalibration run at ``now_ms`` (ms UTC) under ``home`` (module docstring).
    ``RecalFileError`` (nothing written) when the state file is unreadable."""
    state = read_state(home)
    history = read_history(open_root(cfg.data_url, home))
    rows = labelled_rows(read_scores(home), history, cfg.horizon)
    run = _Run(state, tracker, cfg, now_ms)
    for symbol in cfg.symbols:
        versions = current_versions(history, symbol)
        if versions is None:
            run.notes.append(f"{symbol}: nothing published yet")
            continue
        for model in MODELS:
            run.retire_stale(symbol, model, versions)
            mine = of_versions(rows, symbol, model, versions_of(versions, model))
            served = served_rows(
                mine, run.maps, model, versions_of(versions, model), run.since(mine, symbol, model)
            )
            run.judge_candidate(symbol, model, served)
            run.probe(symbol, model, served, mine.height)
            run.fit(symbol, model, served, versions)
    path = write_state(home, {**state, "updated_at": now_ms, "maps": run.maps, "drift": run.drift})
    for note in run.notes:
        log.info(note)
    drifted = [f"{s}/{m}" for s, ms in run.drift.items() for m, d in ms.items() if d["drifted"]]
    table = status_table(run.maps, run.drift)
    return RecalResult(path, table, run.fitted, run.changes, drifted, run.notes)


def status_table(maps: list[dict], drift_doc: dict[str, dict]) -> pl.DataFrame:
    """One row per symbol and model of ``drift_doc``: the active and candidate map ids (the
    candidate with its shadow progress), matured bars, bars missing, the drift (max shift) and
    whether it drifted."""
    rows = []
    for symbol, models in drift_doc.items():
        for model, d in models.items():
            act = the_map(maps, symbol, model, "active")
            cand = the_map(maps, symbol, model, "candidate")
            progress = (cand.get("shadow") or {}).get("n", 0) if cand else 0
            rows.append(
                {
                    "symbol": symbol,
                    "model": model,
                    "active": act["id"] if act else None,
                    "candidate": f"{cand['id']} ({progress} bars)" if cand else None,
                    "bars": d["bars"],
                    "missing": d["missing"],
                    "shift": d.get("max_abs_shift"),
                    "drifted": bool(d["drifted"]),
                }
            )
    schema = dict.fromkeys(TABLE_COLUMNS, pl.String) | {
        "bars": pl.Int64,
        "missing": pl.Int64,
        "shift": pl.Float64,
        "drifted": pl.Boolean,
    }
    return pl.DataFrame(rows, schema=schema)


def recalibrate_published(
    home: Path, rows: dict[str, dict], now_ms: int, notes: list[str]
) -> dict[str, list[str]]:
    """Apply the map each published row is served under (``recal_state.served_map`` at
    ``now_ms``, its ``published_at``) to its ``{m}_p_up``, in place; returns per symbol the ids
    of the maps applied. An unreadable state file publishes the models' own probabilities,
    with a note (the ``live_recalibration`` asset fails naming the file)."""
    try:
        maps = read_state(home)["maps"]
    except RecalFileError as exc:
        notes.append(f"published without recalibration: {exc}")
        return {}
    applied: dict[str, list[str]] = {}
    for symbol, row in rows.items():
        for model in MODELS:
            m = served_map(maps, symbol, model, versions_of(row, model), now_ms)
            if m is None:
                continue
            col = f"{model}_p_up"
            row[col] = float(calibrator(m["calibrator"]).transform([row[col]])[0])
            applied.setdefault(symbol, []).append(m["id"])
    return applied


def candidate_scores(
    home: Path,
    scored: pl.DataFrame,
    history: pl.DataFrame,
    horizon: int,
    window: int,
    notes: list[str],
) -> dict[str, dict[str, dict]]:
    """Per symbol, ``{"recal_{m}": scores}`` of each candidate map: ``window_scores`` of its
    recalibrated probability on the newest ``window`` bars matured after its fit (none before
    one did). An unreadable state file scores none, with a note."""
    try:
        maps = read_state(home)["maps"]
    except RecalFileError as exc:
        notes.append(f"candidate recalibrations not scored: {exc}")
        return {}
    rows = labelled_rows(scored, history, horizon)
    out: dict[str, dict[str, dict]] = {}
    for cand in (m for m in maps if m["stage"] == "candidate"):
        symbol, model = cand["symbol"], cand["model"]
        mine = of_versions(rows, symbol, model, cand["versions"])
        served = served_rows(mine, maps, model, cand["versions"], cand["last_bar"] + 1)
        after = after_fit(served, cand["last_bar"]).tail(window)
        if after.is_empty():
            continue
        p = recalibrated(after, calibrator(cand["calibrator"]))
        frame = after.select("y_up", "fwd_ret").with_columns(
            **{f"{m}_p_up": pl.Series(p) for m in MODELS}
        )
        out.setdefault(symbol, {})[f"recal_{model}"] = window_scores(frame)[model]
    return out
