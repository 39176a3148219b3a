"""Champion promotion, like for like: a new model version takes the ``champion`` alias only when
its ``DECISION_METRIC`` on its test window is no worse than the champion's on that same window.

The rule is the pure ``core.evaluation.champion.champion_should_move``; this use case gathers its
inputs from the registry (``adapters.model_versions``: the alias and the evaluations recorded as
version tags), scores the champion on a new window when it never was, and records the decision
on the new version (tags ``decision``, ``promoted``, ``compared_to_version``, ``champion_value``,
``new_value``). The retrain use case (``usecases.train``) calls ``promote_champion``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from levibot_pipelines.adapters.model_versions import (
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
) -> dict[str, Any]:
    """Move ``champion`` of ``name`` to ``version`` only if its ``log_loss`` ``value`` on test
    ``window`` is no worse than the champion's on that same window.

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
) -> dict[str, Any]:
    """Record ``version``'s ``metric`` ``value`` on test ``window`` and move ``champion`` to it
    when ``champion_should_move`` says so (the champion's value must be recorded on the same
    window; see ``core.evaluation.champion``).

    The value is recorded on the version (tags ``window`` and ``eval_tag(metric, window)``), and
    so is the decision: tags ``decision``, ``promoted``, ``compared_to_version``,
    ``champion_value`` and ``new_value`` (``""`` when absent). Returns ``{promoted, reason,
    champion_version, new_version, champion_value, new_value}``, where ``champion_version`` and
    ``champion_value`` describe the champion compared against (``None`` when there was none).
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
    if decision.promoted:
        tracker.set_champion(model_name, version)
    tracker.tag_version(
        model_name, version, _decision_tags(decision, champion_version, champion_value, value)
    )
    log.info("%s v%s on %s: %s", model_name, version, window, decision.reason)
    return {
        "promoted": decision.promoted,
        "reason": decision.reason,
        "champion_version": champion_version,
        "new_version": version,
        "champion_value": champion_value,
        "new_value": value,
    }


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
