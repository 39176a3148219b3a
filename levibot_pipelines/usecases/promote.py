"""Champion promotion, like for like: a new model version passes the offline rule only when its
``DECISION_METRIC`` on its test window is no worse than the champion's on that same window.

The rule is the pure ``core.evaluation.champion.champion_should_move``; this use case gathers its
inputs from the registry (``adapters.model_versions``: the aliases and the evaluations recorded
as version tags), scores the champion on a new window when it never was, places the new version
and records why on it (tags ``decision``, ``promoted``, ``alias``, ``compared_to_version``,
``champion_value``, ``new_value``).

Where a version that passes goes: the ``champion`` alias when there is no champion yet (or it
already is the champion), or with ``shadow`` (what the retrain use case, ``usecases.train``,
asks for) the ``challenger`` alias when another version is champion: it is then published in
shadow beside the champion, never traded, and replaces the champion only when it beats it live
(``usecases.shadow_promotion``, rule ``core.evaluation.shadow_rule``). One challenger at a time:
while one is in shadow, a newer version that passes gets no alias and its ``decision`` tag says
it waits (it would restart the count of matured bars). A version refused by the offline rule
gets no alias (``alias`` tag ``none``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from levibot_pipelines.adapters.model_versions import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    WINDOW_TAG,
    evaluation_tags,
    recorded_evaluation,
)
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.champion import Decision, champion_should_move

log = logging.getLogger(__name__)
# Lower log loss on the same test window is what a champion has to beat.
DECISION_METRIC = "log_loss"


def promote_champion(
    tracker: Tracker,
    name: str,
    version: str,
    *,
    value: float,
    window: str,
    score_version: Callable[[str], float],
    shadow: bool = False,
) -> dict[str, Any]:
    """Place ``version`` of ``name`` when its ``log_loss`` ``value`` on test ``window`` is no
    worse than the champion's on that same window: the ``champion`` alias, or with ``shadow``
    the ``challenger`` alias while another version is champion (module docstring).

    ``score_version(version)`` computes a registered version's log loss on ``window`` (the
    caller loads it and predicts the same bars); the champion is scored here when it has no
    value recorded for this window yet, so the comparison is always like for like.
    """
    _score_champion_once(tracker, name, version, window, score_version)
    decision = promote_if_no_worse(
        tracker,
        name,
        version,
        metric=DECISION_METRIC,
        value=value,
        higher_is_better=False,
        window=window,
        shadow=shadow,
    )
    log.info("%s v%s: %s", name, version, decision["reason"])
    return decision


def _score_champion_once(
    tracker: Tracker,
    name: str,
    version: str,
    window: str,
    score_version: Callable[[str], float],
) -> None:
    """Record the champion's ``DECISION_METRIC`` on ``window`` (``score_version``) unless it is
    recorded already, there is no champion, or ``version`` is the champion."""
    current = tracker.champion(name)
    if current is None or current[0] == version:
        return
    champion_version, champion_tags = current
    if recorded_evaluation(champion_tags, metric=DECISION_METRIC, window=window) is None:
        value = score_version(champion_version)
        tags = evaluation_tags(metric=DECISION_METRIC, window=window, value=value)
        tracker.tag_version(name, champion_version, tags)


def promote_if_no_worse(
    tracker: Tracker,
    model_name: str,
    version: str,
    *,
    metric: str,
    value: float,
    higher_is_better: bool,
    window: str,
    shadow: bool = False,
) -> dict[str, Any]:
    """Record ``version``'s ``metric`` ``value`` on test ``window`` and, when
    ``champion_should_move`` says it passes (the champion's value must be recorded on the same
    window; see ``core.evaluation.champion``), move ``champion`` to it, or with ``shadow`` and
    another champion in place, ``challenger`` (``_place``).

    The value is recorded on the version (tags ``window`` and ``eval_tag(metric, window)``), and
    so is the decision: tags ``decision``, ``promoted`` (took the champion alias), ``alias``
    (``champion``, ``challenger`` or ``none``), ``compared_to_version``, ``champion_value`` and
    ``new_value`` (``""`` when absent). Returns ``{promoted, alias, reason, champion_version,
    new_version, champion_value, new_value}``, where ``alias`` is None for no alias and
    ``champion_version`` and ``champion_value`` describe the champion compared against
    (``None`` when there was none).
    """
    version, value = str(version), float(value)
    recorded = evaluation_tags(metric=metric, window=window, value=value)
    tracker.tag_version(model_name, version, {**recorded, WINDOW_TAG: window})
    current = tracker.champion(model_name)
    champion_version, champion_value = _compared_champion(
        current, model_name, version, metric=metric, window=window
    )
    decision = champion_should_move(
        value,
        champion_value,
        metric=metric,
        higher_is_better=higher_is_better,
        new_version=version,
        champion_version=None if current is None else current[0],
    )
    decision, alias = _place(tracker, model_name, version, decision, current, shadow)
    tags = _decision_tags(decision, champion_version, champion_value, value)
    tracker.tag_version(model_name, version, {**tags, "alias": alias or "none"})
    log.info("%s v%s on %s: %s", model_name, version, window, decision.reason)
    return {
        "promoted": decision.promoted,
        "alias": alias,
        "reason": decision.reason,
        "champion_version": champion_version,
        "new_version": version,
        "champion_value": champion_value,
        "new_value": value,
    }


def _place(
    tracker: Tracker,
    model_name: str,
    version: str,
    decision: Decision,
    current: tuple[str, dict[str, str]] | None,
    shadow: bool,
) -> tuple[Decision, str | None]:
    """Move the alias ``decision`` earns and return ``(decision, alias)``: no alias when it
    did not pass; ``challenger`` when ``shadow`` and ``current`` (the champion) is another
    version (the decision then says so and ``promoted`` is False), unless another challenger
    is still in shadow (no alias, the decision says it waits); else ``champion``."""
    if not decision.promoted:
        return decision, None
    if not shadow or current is None or current[0] == version:
        tracker.set_champion(model_name, version)
        return decision, CHAMPION_ALIAS
    previous = tracker.challenger(model_name)
    if previous is not None and previous[0] != version:
        # One challenger at a time, until its verdict: a newer one would restart the count of
        # matured bars, and with a daily retrain none would ever reach LEVIBOT_SHADOW_MIN_BARS
        # (500 bars are 5.2 days of 15-minute bars).
        passed = decision.reason.removeprefix("promoted: ")
        reason = (
            f"waiting: {passed}; challenger v{previous[0]} is still in shadow (one at a time "
            "until its verdict): retrain after it is promoted or retired"
        )
        return Decision(False, reason), None
    tracker.set_challenger(model_name, version)
    passed = decision.reason.removeprefix("promoted: ")
    reason = (
        f"challenger: {passed}; in shadow beside champion v{current[0]} until it beats it on "
        "matured live bars (core.evaluation.shadow_rule)"
    )
    return Decision(False, reason), CHALLENGER_ALIAS


def _compared_champion(
    current: tuple[str, dict[str, str]] | None,
    model_name: str,
    version: str,
    *,
    metric: str,
    window: str,
) -> tuple[str | None, float | None]:
    """``(champion_version, champion_value)`` that ``version`` is compared against: ``(None,
    None)`` without another champion; the value is ``None`` when the champion has no ``metric``
    recorded on ``window`` (logged)."""
    if current is None or current[0] == version:
        return None, None
    champion_version, champion_tags = current
    champion_value = recorded_evaluation(champion_tags, metric=metric, window=window)
    if champion_value is None:
        log.info(
            "%s: champion v%s has no %s on window %s (its window: %s)",
            model_name,
            champion_version,
            metric,
            window,
            champion_tags.get(WINDOW_TAG),
        )
    return champion_version, champion_value


def _decision_tags(
    decision: Decision,
    champion_version: str | None,
    champion_value: float | None,
    value: float,
) -> dict[str, str]:
    """The version tags that record ``decision`` (``""`` for an absent champion or value)."""
    return {
        "decision": decision.reason,
        "promoted": str(decision.promoted).lower(),
        "compared_to_version": champion_version or "",
        "champion_value": "" if champion_value is None else repr(champion_value),
        "new_value": repr(value),
    }
