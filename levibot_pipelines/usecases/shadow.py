"""The shadow challengers published beside the champions (behind the ``shadow_predictions``
asset): for every symbol with a ``challenger`` (``usecases.promote``) of either model kind, the
prediction of its challenger pair on the newest feature bar (the challenger where there is one,
the champion for the other kind), written to ``published/shadow`` (``adapters.prediction_files
.write_shadow``: the champions' schema and write order, a row per symbol with a challenger).

Never traded: a shadow row is HOLD at size 0, flat (``paper_equity`` 1, ``paper_drawdown`` 0),
``decision_model`` flat, ``decision_reason`` ``SHADOW_REASON``; it carries the champion row's
regime and kill-switch state as published (nothing here evaluates or changes the kill-switch,
and the paper position replays only the champions' history). Its ensemble is the challenger
pair under the weight stored with the champions (``ensemble.json``: no weight is fitted for a
pair that is not champion). Live scoring scores the shadow history as ``shadow_{model}``
(``usecases.live_scores``), which the shadow rule compares with the champions
(``usecases.shadow_promotion``). Without any challenger the shadow files are removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.prediction_files import read_latest, remove_shadow, write_shadow
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root
from levibot_pipelines.usecases.ensemble import champion_pair
from levibot_pipelines.usecases.publish import predict_row

log = logging.getLogger(__name__)

SHADOW_REASON = "shadow: scored, never traded"
KINDS = ("lgbm", "deep")


@dataclass(frozen=True)
class ShadowPair:
    """A symbol's ``champions`` and the ``versions`` its shadow row is computed with
    (``{"lgbm": v, "deep": v}``: the challenger where there is one), and which kinds are
    ``challengers``."""

    champions: dict[str, str]
    versions: dict[str, str]
    challengers: tuple[str, ...]


@dataclass
class ShadowReport:
    """One shadow publish: the JSON ``path`` written (None when nothing was), the ``rows``
    written, the ``pairs`` per symbol with a challenger, whether a stale shadow file was
    ``removed``, and ``notes`` (symbols left out and why)."""

    path: Path | str | None  # a Path under the home, or an s3:// URL
    rows: pl.DataFrame
    pairs: dict[str, ShadowPair]
    removed: bool = False
    notes: list[str] = field(default_factory=list)


def shadow_pairs(
    tracker: Tracker, symbols: tuple[str, ...], notes: list[str]
) -> dict[str, ShadowPair]:
    """The ``ShadowPair`` of every symbol of ``symbols`` with a challenger of either kind; a
    symbol whose other kind has no champion is left out with a note."""
    pairs = {}
    for symbol in symbols:
        champions, challengers = {}, {}
        for kind in KINDS:
            name = model_name(kind, symbol)
            champ, chal = tracker.champion(name), tracker.challenger(name)
            if champ is not None:
                champions[kind] = champ[0]
            if chal is not None:
                challengers[kind] = chal[0]
        if not challengers:
            continue
        if set(champions) != set(KINDS):
            missing = sorted(set(KINDS) - set(champions))
            notes.append(f"{symbol}: a challenger but no champion of {missing}: no shadow row")
            continue
        pairs[symbol] = ShadowPair(champions, champions | challengers, tuple(challengers))
    return pairs


def untraded(champion_row: dict) -> dict:
    """The decision part of a shadow row: never traded, flat, with the champion row's regime
    and kill-switch state as published."""
    return {
        "regime": champion_row["regime"],
        "regime_state": champion_row["regime_state"],
        "entry_threshold": champion_row["entry_threshold"],
        "signal": "HOLD",
        "position": 0.0,
        "closed_side": None,
        "size": 0.0,
        "stop_loss": None,
        "take_profit": None,
        "paper_equity": 1.0,
        "paper_drawdown": 0.0,
        "decision_model": "flat",
        "horizon": None,
        "expected_net_bps": None,
        "decision_reason": SHADOW_REASON,
        "kill_switch": champion_row["kill_switch"],
        "kill_switch_reason": champion_row["kill_switch_reason"],
    }


def publish_shadow(s: Settings, tracker: Tracker, now_ms: int) -> ShadowReport:
    """Publish the shadow row of every symbol with a challenger at ``now_ms`` (ms UTC) beside
    the champions' published rows (module docstring); remove the shadow files when no symbol
    has one. ``ValueError`` when nothing is published for the champions yet."""
    notes: list[str] = []
    pairs = shadow_pairs(tracker, s.market.symbols, notes)
    rows = _shadow_rows(s, tracker, pairs, now_ms, notes) if pairs else []
    for note in notes:
        log.warning(note)
    root = data_root(s)
    if not rows:
        return ShadowReport(None, pl.DataFrame(), pairs, remove_shadow(root), notes)
    frame = pl.DataFrame(rows)
    return ShadowReport(write_shadow(root, frame), frame, pairs, False, notes)


def _shadow_rows(
    s: Settings, tracker: Tracker, pairs: dict[str, ShadowPair], now_ms: int, notes: list[str]
) -> list[dict]:
    """A shadow row per symbol of ``pairs`` on the bar its champion row was published for;
    a symbol without a champion row on its newest feature bar is left out with a note."""
    root = data_root(s)
    champion = read_latest(root)
    if champion is None:
        raise ValueError(
            f"nothing published under {root.url}: the shadow is published beside the "
            "champions' rows (materialize latest_predictions first)"
        )
    features = ParquetStore(s.home, root).read_features()
    rows = []
    for symbol, pair in pairs.items():
        published = champion.rows.get(symbol)
        if published is None:
            notes.append(f"{symbol}: no champion row published, no shadow row")
            continue
        stored = champion_pair(
            Path(s.home), symbol, pair.champions["lgbm"], pair.champions["deep"], notes
        )
        out, _, _ = predict_row(s, tracker, features, symbol, now_ms, pair.versions, stored)
        if out["bar_time"] != published["bar_time"]:
            notes.append(
                f"{symbol}: the champion row is for bar {published['bar_time']}, the newest "
                f"feature bar is {out['bar_time']}: no shadow row until they agree"
            )
            continue
        rows.append({**out, **untraded(published)})
    return rows
