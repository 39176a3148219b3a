"""The live recalibration's state file, ``$LEVIBOT_HOME/live/recalibration.json``
(``adapters.home.live_recalibration_path``; the document is ``core.evaluation.recal_state``'s).

Written atomically (temporary sibling + ``os.replace``, ``adapters.store``) by the
``live_recalibration`` asset only; read by the publisher, live scoring and the API's gauges. A
file that cannot be parsed is a ``RecalFileError`` naming it, and is never overwritten: nothing
in it is lost, and nothing is recalibrated until it is restored or moved aside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from levibot_pipelines.adapters.home import live_recalibration_path
from levibot_pipelines.adapters.store import json_safe, write_text_atomic
from levibot_pipelines.core.evaluation.recal_state import check_state, empty_state


class RecalFileError(ValueError):
    """``live/recalibration.json`` is corrupt, truncated or of another layout."""


def parse_state(text: str, source: str = "recalibration.json") -> dict[str, Any]:
    """The state document in ``text``; ``RecalFileError`` naming ``source`` when it is not one."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecalFileError(
            f"{source} is not valid JSON ({exc.msg} at char {exc.pos}): half-written or corrupt; "
            "restore it or move it aside (live recalibration starts over without it)"
        ) from None
    try:
        return check_state(doc)
    except ValueError as exc:
        raise RecalFileError(f"{source}: {exc}") from None


def read_state(home: Path | str) -> dict[str, Any]:
    """The state under ``home``; an empty one when there is no file; ``RecalFileError`` when
    it is unreadable."""
    path = live_recalibration_path(home)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return empty_state()
    except (OSError, UnicodeDecodeError) as exc:
        raise RecalFileError(f"{path} is unreadable: {type(exc).__name__}: {exc}") from None
    return parse_state(text, str(path))


def write_state(home: Path | str, state: dict[str, Any]) -> Path:
    """Replace the state file with ``state`` (checked first; NaN written as null); returns its
    path. ``ValueError`` (nothing written) when ``state`` is not a state document."""
    doc = check_state(json_safe(state))
    path = live_recalibration_path(home)
    write_text_atomic(json.dumps(doc, indent=2, allow_nan=False) + "\n", path)
    return path
