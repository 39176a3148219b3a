"""The shadow rule applied (in the ``shadow_predictions`` asset, after ``live_scores``): each
``challenger`` compared with its champion on the matured bars both were scored on, promoted,
retired or left waiting by ``core.evaluation.shadow_rule.shadow_verdict``.

Inputs: the scored histories (``adapters.live_files``: the champions' and the shadow's), each
row labelled with the versions that published its bar first (``first_published`` of the
published and the shadow histories, the rows live scoring scored), paired per symbol and kind
on the bars where the champion version and the challenger version both published
(``shadow_rule.paired_bars``), at the label horizon ``LEVIBOT_LABEL_HORIZON``, with
``LEVIBOT_SHADOW_MIN_BARS``.

A promotion keeps the champions' files consistent: the ensemble weight and decision policy of the
new champion pair are fitted first (``usecases.ensemble.fit_champion_ensemble`` with that pair:
``ensemble.json`` then names it, so the publisher never trades a policy fitted for other
models); then the ``champion`` alias moves and the ``challenger`` alias is removed. When the
refit fails (``ValueError``) no alias moves: the promotion is ``deferred`` to the next run, with
a note. A retirement removes the ``challenger`` alias. Both decisions are recorded as tags on the
challenger version: ``shadow_decision`` (the reason), ``shadow_action``, ``shadow_n_bars``,
``shadow_mean_diff`` (nats, champion minus challenger), ``shadow_t``,
``shadow_champion_version``, ``shadow_decided_at`` (ms UTC) and ``alias``; the replaced champion
gets ``replaced_by`` and ``alias`` ``none``. A waiting challenger records nothing (the asset's
metadata shows where it stands).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.live_files import read_scores
from levibot_pipelines.adapters.prediction_files import read_history
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.live_scoring import first_published
from levibot_pipelines.core.evaluation.shadow_rule import KINDS, paired_bars, shadow_verdict
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, symbol_data
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root, data_store
from levibot_pipelines.usecases.ensemble import decision_setup, fit_champion_ensemble

log = logging.getLogger(__name__)
VERSIONS = ("lgbm_version", "deep_version")


@dataclass(frozen=True)
class ShadowDecision:
    """The rule's outcome for one challenger: ``action`` is ``promote``, ``retire``, ``wait``
    or ``deferred`` (a promotion whose ensemble refit failed); ``n`` paired bars, the mean
    paired log-loss difference ``mean_diff`` (nats, champion minus challenger) and ``t``."""

    symbol: str
    kind: str
    champion_version: str
    challenger_version: str
    action: str
    n: int
    mean_diff: float
    t: float
    reason: str


def labelled_scores(scored: pl.DataFrame, history: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """The ``horizon`` rows of ``scored`` (``SCORED_SCHEMA``) with the ``lgbm_version`` and
    ``deep_version`` of the first published row of their bar in ``history`` (the row live
    scoring scored)."""
    versions = first_published(history).select("symbol", "bar_time", *VERSIONS)
    rows = scored.filter(pl.col("horizon") == horizon)
    return rows.join(versions, on=["symbol", "bar_time"], how="left")


def judge(
    champion: pl.DataFrame,
    shadow: pl.DataFrame,
    symbol: str,
    kind: str,
    versions: tuple[str, str],
    *,
    horizon: int,
    min_bars: int,
) -> ShadowDecision:
    """The verdict on ``symbol``'s challenger of ``kind``; ``versions``: (champion,
    challenger); ``champion`` / ``shadow``: ``labelled_scores`` of each history."""
    pick = pl.col("symbol") == symbol
    bars = paired_bars(
        champion.filter(pick),
        shadow.filter(pick),
        kind=kind,
        champion_version=versions[0],
        challenger_version=versions[1],
    )
    v = shadow_verdict(
        bars.get_column("y_up").to_numpy(),
        bars.get_column("p_champion").to_numpy(),
        bars.get_column("p_challenger").to_numpy(),
        horizon=horizon,
        min_bars=min_bars,
    )
    return ShadowDecision(symbol, kind, *versions, v.action, v.n, v.mean_diff, v.t, v.reason)


def promote_challengers(
    s: Settings, tracker: Tracker, cfg: EvalConfig, now_ms: int
) -> tuple[list[ShadowDecision], list[str]]:
    """Apply the shadow rule to every challenger of the configured symbols at ``now_ms`` (ms
    UTC): move the aliases, refit the ensemble and record the decisions (module docstring).
    Returns the decisions and notes."""
    h, min_bars = s.models.label_horizon, s.serving.shadow_min_bars
    root = data_root(s)
    champion = labelled_scores(read_scores(s.home), read_history(root), h)
    shadow = labelled_scores(read_scores(s.home, shadow=True), read_history(root, shadow=True), h)
    decisions: list[ShadowDecision] = []
    notes: list[str] = []
    for symbol in s.market.symbols:
        found = []
        for kind in KINDS:
            name = model_name(kind, symbol)
            champ, chal = tracker.champion(name), tracker.challenger(name)
            if chal is None or champ is None:
                continue
            versions = (champ[0], chal[0])
            found.append(
                judge(champion, shadow, symbol, kind, versions, horizon=h, min_bars=min_bars)
            )
        decisions += _apply(s, tracker, cfg, symbol, found, now_ms, notes)
    for note in notes:
        log.warning(note)
    return decisions, notes


def _apply(
    s: Settings,
    tracker: Tracker,
    cfg: EvalConfig,
    symbol: str,
    found: list[ShadowDecision],
    now_ms: int,
    notes: list[str],
) -> list[ShadowDecision]:
    """Carry out ``symbol``'s decisions: refit the ensemble for the pair its promotions make
    (all deferred when that fails), then move the aliases and record the tags."""
    promoted = {d.kind: d.challenger_version for d in found if d.action == "promote"}
    if promoted:
        judged = {d.kind: d.champion_version for d in found}
        try:
            pair = {k: judged.get(k) or _champion_version(tracker, k, symbol) for k in KINDS}
            _refit(s, tracker, cfg, symbol, pair | promoted)
        except ValueError as exc:
            notes.append(f"{symbol}: promotion deferred, the ensemble refit failed: {exc}")
            found = [_deferred(d, str(exc)) if d.action == "promote" else d for d in found]
    for d in found:
        _record(tracker, d, now_ms)
    return found


def _deferred(d: ShadowDecision, why: str) -> ShadowDecision:
    reason = f"deferred: {d.reason}; the ensemble refit failed: {why}"
    return ShadowDecision(**{**d.__dict__, "action": "deferred", "reason": reason})


def _champion_version(tracker: Tracker, kind: str, symbol: str) -> str:
    champ = tracker.champion(model_name(kind, symbol))
    if champ is None:
        raise ValueError(f"no champion for {model_name(kind, symbol)}")
    return champ[0]


def _refit(
    s: Settings, tracker: Tracker, cfg: EvalConfig, symbol: str, versions: dict[str, str]
) -> dict:
    """``ensemble.json`` of ``symbol`` fitted for the pair ``versions`` (as ``ensemble_weights``
    fits the champions)."""
    store = data_store(s)
    return fit_champion_ensemble(
        tracker,
        Path(s.home),
        symbol_data(store.read_features(), symbol),
        cfg,
        tf_ms=s.market.timeframe_ms,
        bars=store.read_ohlcv(symbol),
        decision=decision_setup(s, symbol),
        versions=versions,
    )


def _record(tracker: Tracker, d: ShadowDecision, now_ms: int) -> None:
    """Move the aliases ``d`` decides and record it as version tags (nothing for a wait or a
    deferral)."""
    if d.action not in ("promote", "retire"):
        return
    name = model_name(d.kind, d.symbol)
    if d.action == "promote":
        tracker.set_champion(name, d.challenger_version)
        tracker.tag_version(
            name, d.champion_version, {"replaced_by": d.challenger_version, "alias": "none"}
        )
    tracker.remove_challenger(name)
    tracker.tag_version(
        name,
        d.challenger_version,
        {
            "shadow_decision": d.reason,
            "shadow_action": d.action,
            "shadow_n_bars": str(d.n),
            "shadow_mean_diff": repr(d.mean_diff),
            "shadow_t": repr(d.t),
            "shadow_champion_version": d.champion_version,
            "shadow_decided_at": str(now_ms),
            "alias": "champion" if d.action == "promote" else "none",
        },
    )
    log.info("%s v%s: %s", name, d.challenger_version, d.reason)
