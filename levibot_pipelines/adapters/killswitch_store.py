"""Durable kill-switch state under ``LEVIBOT_HOME``.

Files:
- ``kill_switch.json``: ``{"state": effective, "entries": {name: {"state", "reason", "by",
  "since"}}, "updated_at": ms}``; only entries that are not ACTIVE are kept. ``parse_status``
  is its one parser: the CLI, the pipeline and the API all read it through it.
- ``kill_switch_history.jsonl``: append-only audit log, one JSON line per state change of an
  entry: ``{"ts", "entry", "old", "new", "reason", "by"}``. A change of reason alone rewrites the
  state file but adds no line, so a trigger whose reason carries a live number (minutes stale)
  does not flood the log.
- ``kill_switch.lock``: every read-modify-write holds an exclusive ``fcntl.flock`` on it, because
  the Dagster daemon's sensors and a person's CLI may write at the same moment. The state file is
  replaced atomically, so readers never need the lock.

A state file that cannot be read raises :class:`KillSwitchError` naming it: a corrupt switch must
never silently read as ACTIVE. Only engaging HALTED (the safe direction) may replace it: the
corrupt file is renamed ``kill_switch.json.corrupt-{ms}`` and the history line says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from levibot_pipelines.adapters.file_lock import exclusive_lock
from levibot_pipelines.adapters.home import (
    kill_switch_history_path,
    kill_switch_lock_path,
    kill_switch_path,
)
from levibot_pipelines.adapters.store import write_text_atomic
from levibot_pipelines.core.trading.killswitch import (
    MANUAL,
    STATES,
    check_state,
    describe,
    effective_state,
    size_multiplier,
)

log = logging.getLogger(__name__)

ENTRY_KEYS = ("state", "reason", "by", "since")

Changes = dict[str, tuple[str, str]] | Callable[[dict[str, dict]], dict[str, tuple[str, str]]]


class KillSwitchError(ValueError):
    """The kill-switch state file is unreadable or inconsistent."""


@dataclass(frozen=True)
class KillSwitchStatus:
    """The switch as stored: effective ``state``, non-ACTIVE ``entries`` and the ms UTC time of
    the last write (``None`` when nothing was ever written)."""

    state: str
    entries: dict[str, dict] = field(default_factory=dict)
    updated_at: int | None = None

    def reason(self) -> str:
        """Every entry as one human string (``core.trading.killswitch.describe``); "" when
        ACTIVE."""
        return describe(self.entries)

    def multiplier(self, reducing_factor: float) -> float:
        """Size multiplier of the effective state: 1, ``reducing_factor`` or 0."""
        return size_multiplier(self.state, reducing_factor)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


def _bad_entry_value(entry: dict) -> str | None:
    """What is wrong with one entry's values (``state`` in STATES, ``since`` an integer ms,
    ``reason`` and ``by`` strings); ``None`` when nothing is."""
    if entry["state"] not in STATES:
        return f"state {entry['state']!r}, expected one of {STATES}"
    since = entry["since"]
    if isinstance(since, bool) or not isinstance(since, int):
        return f"since {since!r}, expected an integer ms timestamp"
    for key in ("reason", "by"):
        if not isinstance(entry[key], str):
            return f"{key} {entry[key]!r}, expected a string"
    return None


def parse_status(text: str, path: Path | str = "kill_switch.json") -> KillSwitchStatus:
    """Parse the state file's ``text``; :class:`KillSwitchError` naming ``path`` when it is
    unusable: not JSON, malformed entries, or a ``state`` its entries do not give."""

    def bad(why: str) -> KillSwitchError:
        return KillSwitchError(
            f"kill-switch state file {path} is corrupt ({why}); trading must not "
            "resume on a guess: fix it, or remove it and engage again"
        )

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"invalid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
        raise bad("expected an object with 'state', 'entries' and 'updated_at'")
    entries = doc["entries"]
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(ENTRY_KEYS) - set(entry):
            raise bad(f"entry {name!r} must hold {list(ENTRY_KEYS)}")
        why = _bad_entry_value(entry)
        if why:
            raise bad(f"entry {name!r} has {why}")
    updated_at = doc.get("updated_at")
    if updated_at is not None and (isinstance(updated_at, bool) or not isinstance(updated_at, int)):
        raise bad(f"updated_at {updated_at!r} is not an integer ms timestamp")
    state = doc.get("state")
    expected = effective_state(entries)
    if state != expected:
        raise bad(f"state {state!r} disagrees with its entries, which give {expected!r}")
    return KillSwitchStatus(state=state, entries=entries, updated_at=updated_at)


class KillSwitch:
    """The kill-switch stored under ``home`` (``LEVIBOT_HOME``)."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.path = kill_switch_path(self.home)
        self.history_path = kill_switch_history_path(self.home)
        self.lock_path = kill_switch_lock_path(self.home)

    def status(self) -> KillSwitchStatus:
        """The stored switch; ACTIVE with no entries when the state file does not exist."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return KillSwitchStatus(state="ACTIVE", entries={}, updated_at=None)
        return parse_status(text, self.path)

    def _move_aside(self, exc: KillSwitchError, now: int) -> Path:
        """Rename the corrupt state file to ``kill_switch.json.corrupt-{now}`` (kept for a
        person to inspect) and log it; returns the new path. Call under the lock."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{now}")
        self.path.rename(aside)
        log.warning("%s; moved it aside to %s to engage HALTED over it", exc, aside)
        return aside

    def _current(self, replace_corrupt: bool, now: int) -> tuple[KillSwitchStatus, Path | None]:
        """(stored status, None); with ``replace_corrupt`` an unreadable file is moved aside:
        (no entries, its new path). Call under the lock."""
        try:
            return self.status(), None
        except KillSwitchError as exc:
            if not replace_corrupt:
                raise
            return KillSwitchStatus(state="ACTIVE"), self._move_aside(exc, now)

    def _apply(
        self, changes: Changes, by: str, now_ms: int | None, replace_corrupt: bool = False
    ) -> tuple[bool, KillSwitchStatus]:
        """Set each entry name -> (state, reason) under the lock; ACTIVE removes the entry.
        ``changes`` may be a function of the stored entries, evaluated under the lock.
        Writes (history lines, then the state file) only when something changed; a crash
        between them leaves a line for a change not in effect, which the next write corrects. With
        ``replace_corrupt`` an unreadable state file is moved aside (:meth:`_move_aside`) and
        the changes apply to no entries; its history lines say so (``old`` is UNKNOWN)."""
        now = _now_ms() if now_ms is None else int(now_ms)
        with exclusive_lock(self.lock_path):
            current, aside = self._current(replace_corrupt, now)
            entries = {name: dict(e) for name, e in current.entries.items()}
            if callable(changes):
                changes = changes(current.entries)
            events = []
            for name, (state, reason) in changes.items():
                old = entries.get(name)
                old_state = old["state"] if old else "ACTIVE"
                if state == "ACTIVE":
                    if old is not None:
                        del entries[name]
                elif old_state == state:
                    if old["reason"] == reason:
                        continue
                    entries[name] = {**old, "reason": reason, "by": by}
                else:
                    entries[name] = {"state": state, "reason": reason, "by": by, "since": now}
                if old_state != state:
                    events.append(
                        {"ts": now, "entry": name, "old": old_state, "new": state}
                        | {"reason": reason, "by": by}
                    )
            if aside is not None:
                note = f" (corrupt state file moved aside to {aside.name}, state was unknown)"
                events = [{**e, "old": "UNKNOWN", "reason": e["reason"] + note} for e in events]
            if entries == current.entries:
                return False, current
            status = KillSwitchStatus(effective_state(entries), entries, now)
            doc = {"state": status.state, "entries": entries, "updated_at": now}
            if events:  # the audit line first: never an effective change without its line
                with open(self.history_path, "a") as fh:
                    fh.writelines(json.dumps(e, sort_keys=True) + "\n" for e in events)
            write_text_atomic(json.dumps(doc, indent=2, sort_keys=True) + "\n", self.path)
            for e in events:
                log.warning(
                    "kill-switch %s: %s -> %s by %s (%s); effective %s",
                    e["entry"],
                    e["old"],
                    e["new"],
                    by,
                    e["reason"],
                    status.state,
                )
            return True, status

    def engage(
        self,
        state: str,
        reason: str,
        by: str,
        now_ms: int | None = None,
        *,
        replace_corrupt: bool = False,
    ) -> KillSwitchStatus:
        """Set the manual entry to ``state`` (REDUCING or HALTED) with a non-empty ``reason``,
        attributed to ``by``; returns the new status. An unreadable state file raises
        :class:`KillSwitchError`, unless ``replace_corrupt`` (HALTED only, the safe direction):
        then it is moved aside to ``kill_switch.json.corrupt-{ms}`` and HALTED written."""
        if check_state(state) == "ACTIVE":
            raise ValueError("engage state 'ACTIVE' is not allowed; expected REDUCING or HALTED")
        if replace_corrupt and state != "HALTED":
            raise ValueError(f"replace_corrupt engages HALTED only, not {state!r}")
        change = {MANUAL: (state, _text(reason, "reason"))}
        return self._apply(change, _text(by, "by"), now_ms, replace_corrupt)[1]

    def release(
        self, by: str, reason: str = "", now_ms: int | None = None, *, all_entries: bool = False
    ) -> KillSwitchStatus:
        """Clear the manual entry; with ``all_entries`` also every automatic trigger (each
        re-engages at its next evaluation if its condition still holds)."""
        reason = reason.strip() or "released"

        def changes(entries: dict[str, dict]) -> dict[str, tuple[str, str]]:
            names = list(entries) if all_entries else [MANUAL]
            return {name: ("ACTIVE", reason) for name in names}

        return self._apply(changes, _text(by, "by"), now_ms)[1]

    def set_trigger(
        self, name: str, state: str | None, reason: str, by: str, now_ms: int | None = None
    ) -> bool:
        """Set automatic trigger ``name`` to ``state``; ``None`` or ACTIVE clears it.

        Returns True when the state file changed. The same state with the same reason writes
        nothing; a new reason with the same state keeps ``since`` and adds no history line.
        """
        name = _text(name, "trigger name")
        if name == MANUAL:
            raise ValueError("trigger name 'manual' is reserved for engage/release by a person")
        state = "ACTIVE" if state is None else check_state(state)
        return self._apply({name: (state, _text(reason, "reason"))}, _text(by, "by"), now_ms)[0]

    def history(self, limit: int | None = None) -> list[dict]:
        """Audit log lines, oldest first; the newest ``limit`` when given. [] when none."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit={limit!r}: expected None or an integer >= 0")
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for i, line in enumerate(lines, start=1):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise KillSwitchError(
                    f"kill-switch history {self.history_path} line {i} is not JSON: {line[:80]!r}"
                ) from None
        return out if limit is None else out[len(out) - limit :]
