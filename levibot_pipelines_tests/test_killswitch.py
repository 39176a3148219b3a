"""Kill-switch: pure rules, durable state under LEVIBOT_HOME, cross-process locking and the CLI."""

import json
import multiprocessing as mp
import os
import subprocess
import sys

import numpy as np
import pytest

from levibot_pipelines.adapters.killswitch_store import KillSwitch, KillSwitchError
from levibot_pipelines.core.trading.killswitch import (
    STATES,
    Applied,
    PsiReading,
    RiskInputs,
    RiskLimits,
    apply_state,
    automatic_triggers,
    describe,
    drawdown_trigger,
    drift_trigger,
    effective_state,
    severity,
    size_multiplier,
    staleness_trigger,
)
from levibot_pipelines.core.trading.performance import current_drawdown

T0 = 1_795_514_400_000  # 2026-11-24 10:00:00 UTC in ms


def entry(state, reason="r", by="x", since=T0):
    return {"state": state, "reason": reason, "by": by, "since": since}


# --- core ---------------------------------------------------------------------------------


def test_severity_orders_the_states_and_rejects_unknown_names():
    assert [severity(s) for s in STATES] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"'PAUSED' is not allowed.*ACTIVE.*REDUCING.*HALTED"):
        severity("PAUSED")


def test_effective_state_is_the_most_severe_entry():
    assert effective_state({}) == "ACTIVE"
    assert effective_state({"drift": entry("REDUCING")}) == "REDUCING"
    both = {"drift": entry("REDUCING"), "manual": entry("HALTED"), "x": entry("ACTIVE")}
    assert effective_state(both) == "HALTED"
    with pytest.raises(ValueError, match="'halted' is not allowed"):
        effective_state({"manual": entry("halted")})
    with pytest.raises(ValueError, match="entry 'drift' must be a mapping with a 'state'"):
        effective_state({"drift": "HALTED"})


def test_size_multiplier_per_state():
    assert size_multiplier("ACTIVE", 0.5) == 1.0
    assert size_multiplier("REDUCING", 0.5) == 0.5
    assert size_multiplier("HALTED", 0.5) == 0.0
    with pytest.raises(ValueError, match=r"reducing_factor=1.5: expected a number in \[0, 1\]"):
        size_multiplier("REDUCING", 1.5)


def test_describe_names_who_when_and_why_most_severe_first():
    entries = {
        "drift": entry("REDUCING", "PSI 0.31 on vol_20 (BTCUSDT)", "auto:feature_drift"),
        "manual": entry("HALTED", "exchange outage", "alice"),
    }
    assert describe(entries) == (
        "HALTED by alice at 2026-11-24 10:00 UTC: exchange outage; "
        "drift REDUCING: PSI 0.31 on vol_20 (BTCUSDT)"
    )
    assert describe({}) == ""
    assert describe({"drift": entry("ACTIVE")}) == ""


def test_staleness_trigger_halts_only_past_the_limit():
    assert staleness_trigger(60.0, 60.0) is None  # at the limit: still trading
    assert staleness_trigger(60.5, 60.0) == "HALTED"
    assert staleness_trigger(float("inf"), 60.0) == "HALTED"  # no data at all
    assert staleness_trigger(0.0, 60.0) is None
    with pytest.raises(ValueError, match="staleness_minutes=nan"):
        staleness_trigger(float("nan"), 60.0)
    with pytest.raises(ValueError, match="limit_minutes=0"):
        staleness_trigger(1.0, 0)


def test_drawdown_from_the_running_peak():
    # peak 1.2, last 0.9: 1 - 0.9 / 1.2 = 1 - 0.75 = 0.25
    assert current_drawdown([1.0, 1.2, 0.9]) == pytest.approx(0.25)
    assert current_drawdown([1.0, 1.2, 1.3]) == 0.0  # at a new high
    assert drawdown_trigger(current_drawdown([1.0, 1.2, 0.9]), 0.2) == "HALTED"  # 0.25 > 0.2
    assert drawdown_trigger(current_drawdown([1.0, 1.2, 0.9]), 0.3) is None  # 0.25 <= 0.3
    assert drawdown_trigger(current_drawdown([1.0, 0.75]), 0.25) is None  # 0.25 exactly: not over
    assert drawdown_trigger(current_drawdown([1.0, 0.0]), 0.2) == "HALTED"  # wiped out
    with pytest.raises(ValueError, match="equity must be a non-empty 1-D array"):
        current_drawdown([])
    with pytest.raises(ValueError, match="equity must be finite and >= 0"):
        current_drawdown([1.0, np.nan])
    with pytest.raises(ValueError, match=r"max_drawdown=0: expected a fraction in \(0, 1\]"):
        drawdown_trigger(0.1, 0)
    with pytest.raises(ValueError, match="drawdown=nan: expected a finite fraction >= 0"):
        drawdown_trigger(float("nan"), 0.2)


def test_drift_trigger_reduces_only_above_the_error_level():
    assert drift_trigger(0.31, 0.1, 0.25) == "REDUCING"
    assert drift_trigger(0.25, 0.1, 0.25) is None  # at the error level: warn only
    assert drift_trigger(0.2, 0.1, 0.25) is None  # warn level: no action
    with pytest.raises(ValueError, match="max_psi=-0.1"):
        drift_trigger(-0.1, 0.1, 0.25)
    with pytest.raises(ValueError, match="expected 0 <= warn <= error"):
        drift_trigger(0.3, 0.3, 0.25)


LIMITS = RiskLimits(staleness_minutes=60.0, max_drawdown=0.2, psi_warn=0.1, psi_error=0.25)
WORST = PsiReading("BTCUSDT", "vol_20", 0.31, 0.4)  # ERROR level, within training: no alarm
ALARM = PsiReading("ETHUSDT", "ema_dist_200", 0.42, 0.3)
STALE = "cross_asset_features"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (RiskInputs(), {}),  # nothing known: nothing evaluated, nothing touched
        (
            RiskInputs(staleness_minutes=61.4),
            {"staleness": ("HALTED", "newest feature bar is 61 min stale (limit 60)")},
        ),
        (
            RiskInputs(staleness_minutes=60.0, staleness_subject=STALE),
            {"staleness": (None, "cross_asset_features is 60 min stale (limit 60)")},
        ),
        (  # no data at all: cleared (the sensor on a fresh home)
            RiskInputs(staleness_minutes=float("inf"), staleness_subject=STALE),
            {"staleness": (None, "cross_asset_features is inf min stale (limit 60)")},
        ),
        (
            RiskInputs(drawdown=0.25, drawdown_symbol="SOLUSDT"),
            {"drawdown": ("HALTED", "paper drawdown 25.0% on SOLUSDT (limit 20%)")},
        ),
        (
            RiskInputs(drawdown=0.2, drawdown_symbol="BTCUSDT"),
            {"drawdown": (None, "paper drawdown 20.0% on BTCUSDT (limit 20%)")},
        ),
        (
            RiskInputs(drift_worst=WORST),
            {"drift": (None, "PSI 0.310 on vol_20 (BTCUSDT)")},
        ),
        (
            RiskInputs(drift_worst=ALARM, drift_alarm=ALARM),
            {
                "drift": (
                    "REDUCING",
                    "PSI 0.420 on ema_dist_200 (ETHUSDT), above every same-length window in "
                    "training (0.300)",
                )
            },
        ),
        (
            RiskInputs(staleness_minutes=0.0, drawdown=0.0, drawdown_symbol="BTCUSDT"),
            {
                "staleness": (None, "newest feature bar is 0 min stale (limit 60)"),
                "drawdown": (None, "paper drawdown 0.0% on BTCUSDT (limit 20%)"),
            },
        ),
    ],
)
def test_automatic_triggers_table(inputs, expected):
    assert automatic_triggers(inputs, LIMITS) == expected


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (RiskInputs(staleness_minutes=float("nan")), "staleness_minutes=nan"),
        (RiskInputs(drawdown=-0.1), "drawdown=-0.1: expected a finite fraction >= 0"),
        (RiskInputs(drift_worst=WORST, drift_alarm=PsiReading("X", "f", -1.0)), "max_psi=-1.0"),
    ],
)
def test_automatic_triggers_reject_bad_inputs(inputs, match):
    with pytest.raises(ValueError, match=match):
        automatic_triggers(inputs, LIMITS)


@pytest.mark.parametrize(
    ("decision", "state", "published", "expected"),
    [
        # An entry made while ACTIVE, cut by a stricter live state.
        (("ENTRY_LONG", 0.5, 0.5), "HALTED", "ACTIVE", ("HOLD", 0.0, 0.0, True)),
        (("ENTRY_SHORT", 0.4, -0.4), "HALTED", "ACTIVE", ("HOLD", 0.0, 0.0, True)),
        (("ENTRY_LONG", 0.5, 0.5), "REDUCING", "ACTIVE", ("ENTRY_LONG", 0.25, 0.25, True)),
        (("ENTRY_SHORT", 0.4, -0.4), "REDUCING", "ACTIVE", ("ENTRY_SHORT", 0.2, -0.2, True)),
        (("ENTRY_LONG", 0.25, 0.25), "HALTED", "REDUCING", ("HOLD", 0.0, 0.0, True)),
        # Already decided under that state (or a stricter one): nothing to cut again.
        (("ENTRY_LONG", 0.25, 0.25), "REDUCING", "REDUCING", ("ENTRY_LONG", 0.25, 0.25, False)),
        (("ENTRY_LONG", 0.5, 0.5), "ACTIVE", "ACTIVE", ("ENTRY_LONG", 0.5, 0.5, False)),
        (("HOLD", 0.0, 0.0), "REDUCING", "HALTED", ("HOLD", 0.0, 0.0, False)),
        # Only entries are cut: an exit or a held position passes.
        (("EXIT", 0.0, 0.0), "HALTED", "ACTIVE", ("EXIT", 0.0, 0.0, False)),
        (("HOLD", 0.0, 0.5), "HALTED", "ACTIVE", ("HOLD", 0.0, 0.5, False)),
    ],
)
def test_apply_state_table(decision, state, published, expected):
    signal, size, position = decision
    assert apply_state(signal, size, position, state, 0.5, published) == Applied(*expected)


def test_apply_state_validates_state_and_factor():
    with pytest.raises(ValueError, match="'OFF' is not allowed"):
        apply_state("HOLD", 0.0, 0.0, "OFF", 0.5)
    with pytest.raises(ValueError, match=r"reducing_factor=2: expected a number in \[0, 1\]"):
        apply_state("ENTRY_LONG", 0.5, 0.5, "REDUCING", 2)


# --- durable state ------------------------------------------------------------------------


def test_engage_and_release_persist_across_instances(tmp_path):
    status = KillSwitch(tmp_path).engage("HALTED", "exchange outage", "alice", now_ms=T0)
    assert status.state == "HALTED" and status.multiplier(0.5) == 0.0
    again = KillSwitch(tmp_path).status()  # a new instance reads the file
    assert again == status
    assert again.entries["manual"] == entry("HALTED", "exchange outage", "alice", T0)
    assert again.reason() == "HALTED by alice at 2026-11-24 10:00 UTC: exchange outage"
    doc = json.loads((tmp_path / "kill_switch.json").read_text())
    assert doc == {
        "state": "HALTED",
        "entries": {"manual": again.entries["manual"]},
        "updated_at": T0,
    }

    released = KillSwitch(tmp_path).release("bob", "exchange back", now_ms=T0 + 60_000)
    assert released.state == "ACTIVE" and released.entries == {}
    assert KillSwitch(tmp_path).status().state == "ACTIVE"
    assert [(h["entry"], h["old"], h["new"], h["by"]) for h in KillSwitch(tmp_path).history()] == [
        ("manual", "ACTIVE", "HALTED", "alice"),
        ("manual", "HALTED", "ACTIVE", "bob"),
    ]


def test_missing_file_reads_active(tmp_path):
    status = KillSwitch(tmp_path / "absent").status()
    assert (status.state, status.entries, status.updated_at) == ("ACTIVE", {}, None)
    assert status.multiplier(0.5) == 1.0 and status.reason() == ""


def test_engage_validates_state_reason_and_who(tmp_path):
    switch = KillSwitch(tmp_path)
    with pytest.raises(ValueError, match="engage state 'ACTIVE' is not allowed"):
        switch.engage("ACTIVE", "why", "alice")
    with pytest.raises(ValueError, match="'STOP' is not allowed"):
        switch.engage("STOP", "why", "alice")
    with pytest.raises(ValueError, match="reason must be a non-empty string"):
        switch.engage("HALTED", "  ", "alice")
    with pytest.raises(ValueError, match="trigger name 'manual' is reserved"):
        switch.set_trigger("manual", "HALTED", "why", "auto:x")
    assert not (tmp_path / "kill_switch.json").exists()


def test_triggers_combine_and_release_all_clears_them(tmp_path):
    switch = KillSwitch(tmp_path)
    assert switch.set_trigger("drift", "REDUCING", "PSI 0.31", "auto:feature_drift", T0)
    assert switch.status().state == "REDUCING" and switch.status().multiplier(0.5) == 0.5
    switch.engage("HALTED", "outage", "alice", T0)
    assert switch.status().state == "HALTED"
    assert switch.release("alice").state == "REDUCING"  # the drift trigger still holds
    assert switch.release("alice", all_entries=True).state == "ACTIVE"
    assert switch.set_trigger("drift", None, "PSI 0.05", "auto:feature_drift") is False


def test_unchanged_trigger_writes_nothing_and_a_new_reason_keeps_since(tmp_path):
    switch = KillSwitch(tmp_path)
    assert switch.set_trigger("staleness", "HALTED", "61 min stale", "auto:s", now_ms=T0)
    stat = (tmp_path / "kill_switch.json").stat()
    assert switch.set_trigger("staleness", "HALTED", "61 min stale", "auto:s", T0 + 1) is False
    assert (tmp_path / "kill_switch.json").stat().st_mtime_ns == stat.st_mtime_ns
    assert switch.status().updated_at == T0

    assert switch.set_trigger("staleness", "HALTED", "75 min stale", "auto:s", T0 + 900_000)
    e = switch.status().entries["staleness"]
    assert (e["reason"], e["since"]) == ("75 min stale", T0)  # since: when it became HALTED
    assert switch.status().updated_at == T0 + 900_000
    assert len(switch.history()) == 1  # a reason change alone is not a transition

    assert switch.set_trigger("staleness", "ACTIVE", "fresh", "auto:s", T0 + 1_800_000)
    assert switch.set_trigger("staleness", None, "fresh", "auto:s") is False
    hist = switch.history()
    assert [(h["old"], h["new"], h["reason"]) for h in hist] == [
        ("ACTIVE", "HALTED", "61 min stale"),
        ("HALTED", "ACTIVE", "fresh"),
    ]
    assert switch.history(limit=1) == hist[-1:]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "invalid JSON"),
        ('{"state": "ACTIVE"}', "expected an object with 'state', 'entries'"),
        ('{"state": "HALTED", "entries": {}, "updated_at": 1}', "disagrees with its entries"),
        ('{"state": "X", "entries": {"manual": {"state": "X"}}}', "entry 'manual' must hold"),
    ],
)
def test_corrupt_state_file_raises_naming_it(tmp_path, text, why):
    (tmp_path / "kill_switch.json").write_text(text)
    switch = KillSwitch(tmp_path)
    with pytest.raises(KillSwitchError, match=f"kill_switch.json is corrupt .*{why}"):
        switch.status()
    with pytest.raises(KillSwitchError, match="is corrupt"):  # never overwritten on a guess
        switch.set_trigger("drift", None, "ok", "auto:feature_drift")
    assert (tmp_path / "kill_switch.json").read_text() == text


def _doc(**entry_changes) -> str:
    manual = {**entry("HALTED", "outage", "ops"), **entry_changes}
    return json.dumps({"state": "HALTED", "entries": {"manual": manual}, "updated_at": T0})


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (_doc(since="yesterday"), r"entry 'manual' has since 'yesterday'.*integer ms"),
        (_doc(since=1.5), r"entry 'manual' has since 1.5.*integer ms"),
        (_doc(since=True), r"entry 'manual' has since True.*integer ms"),
        (_doc(by=7), r"entry 'manual' has by 7.*string"),
        (_doc(reason=None), r"entry 'manual' has reason None.*string"),
        (_doc(state="PAUSED"), r"entry 'manual' has state 'PAUSED'"),
        ('{"state": "PAUSED", "entries": {}, "updated_at": 1}', r"state 'PAUSED'"),
        ('{"state": "ACTIVE", "entries": [], "updated_at": 1}', r"expected an object"),
    ],
)
def test_bad_entry_values_are_corrupt(tmp_path, text, why):
    (tmp_path / "kill_switch.json").write_text(text)
    with pytest.raises(KillSwitchError, match=f"kill_switch.json is corrupt .*{why}"):
        KillSwitch(tmp_path).status()


def _set_triggers(home: str, worker: int, n: int, barrier) -> None:
    barrier.wait()
    switch = KillSwitch(home)
    for i in range(n):
        switch.set_trigger(f"t{worker}_{i}", "REDUCING", f"worker {worker}", f"auto:{worker}")


def test_concurrent_processes_lose_no_update(tmp_path):
    workers, per_worker = 6, 15
    ctx = mp.get_context("spawn")  # fork is unsafe once torch/dagster threads exist
    barrier = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_set_triggers, args=(str(tmp_path), w, per_worker, barrier))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    status = KillSwitch(tmp_path).status()
    assert len(status.entries) == workers * per_worker  # 90 read-modify-writes, none lost
    assert len(KillSwitch(tmp_path).history()) == workers * per_worker


# --- CLI ----------------------------------------------------------------------------------


def main(argv):
    # Imported here: the spawned workers above re-import this module, and the CLI loads dagster.
    from levibot_pipelines.cli import main as cli_main

    return cli_main(argv)


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("LEVIBOT_SOURCE", "LEVIBOT_SYMBOLS", "LEVIBOT_REDUCING_FACTOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LEVIBOT_HOME", str(tmp_path))
    return tmp_path


def test_cli_engage_status_release(home, capsys):
    argv = ["kill-switch", "engage", "--reason", "exchange outage", "--by", "alice"]
    assert main(argv) == 0
    assert main(["kill-switch", "status"]) == 0
    out = capsys.readouterr().out
    assert "kill-switch: HALTED (size multiplier 0)" in out
    assert "manual: HALTED by alice since 20" in out and "exchange outage" in out

    assert main(["kill-switch", "engage", "--state", "REDUCING", "--reason", "thin book"]) == 0
    capsys.readouterr()
    assert main(["kill-switch", "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["state"], doc["multiplier"]) == ("REDUCING", 0.5)
    assert doc["entries"]["manual"]["reason"] == "thin book"

    assert main(["kill-switch", "release", "--reason", "resolved", "--by", "bob"]) == 0
    assert "kill-switch: ACTIVE (size multiplier 1)" in capsys.readouterr().out
    assert KillSwitch(home).history()[-1]["by"] == "bob"


def test_cli_errors_exit_2(home, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse rejects the choice before main runs
        main(["kill-switch", "engage", "--state", "ACTIVE", "--reason", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'ACTIVE'" in capsys.readouterr().err
    assert main(["kill-switch", "engage", "--reason", " "]) == 2
    assert "reason must be a non-empty string" in capsys.readouterr().err
    (home / "kill_switch.json").write_text("garbage")
    assert main(["kill-switch", "status"]) == 2
    assert "kill_switch.json is corrupt" in capsys.readouterr().err


def levibot(home, *argv) -> subprocess.CompletedProcess:
    """The real ``levibot`` CLI in a subprocess with ``LEVIBOT_HOME=home``."""
    env = {**os.environ, "LEVIBOT_HOME": str(home)}
    cmd = [sys.executable, "-m", "levibot_pipelines.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


CORRUPT = '{"state": "HALTED", "entries": {"manual": {"state": "HALTED", "since": "yesterday"'


@pytest.mark.parametrize("text", [CORRUPT, _doc(since="yesterday")])
def test_cli_engage_halted_on_a_corrupt_file_moves_it_aside(tmp_path, text):
    path = tmp_path / "kill_switch.json"
    path.write_text(text)
    out = levibot(tmp_path, "kill-switch", "engage", "--reason", "outage", "--by", "ops")
    assert out.returncode == 0, out.stderr
    [aside] = tmp_path.glob("kill_switch.json.corrupt-*")
    assert aside.read_text() == text  # kept for a person to inspect, never parsed again
    assert aside.name in out.stderr and "is corrupt" in out.stderr  # logged, naming the copy
    assert "kill-switch: HALTED (size multiplier 0)" in out.stdout
    status = KillSwitch(tmp_path).status()
    assert status.state == "HALTED" and status.entries["manual"]["reason"] == "outage"
    assert set(status.entries) == {"manual"}
    last = KillSwitch(tmp_path).history()[-1]
    assert (last["entry"], last["old"], last["new"], last["by"]) == (
        "manual",
        "UNKNOWN",
        "HALTED",
        "ops",
    )
    assert aside.name in last["reason"] and "outage" in last["reason"]


@pytest.mark.parametrize(
    "argv",
    [
        ("engage", "--state", "REDUCING", "--reason", "thin book"),
        ("release", "--reason", "resolved"),
        ("release", "--all"),
    ],
)
@pytest.mark.parametrize("text", [CORRUPT, _doc(since="yesterday")])
def test_cli_less_safe_changes_on_a_corrupt_file_still_refuse(tmp_path, argv, text):
    path = tmp_path / "kill_switch.json"
    path.write_text(text)
    out = levibot(tmp_path, "kill-switch", *argv)
    assert out.returncode == 2
    assert "kill_switch.json is corrupt" in out.stderr and "Traceback" not in out.stderr
    assert path.read_text() == text and not list(tmp_path.glob("*.corrupt-*"))


def test_history_line_is_written_before_the_state_file(tmp_path, monkeypatch):
    """A crash between the two writes leaves an audit line for a change that may not be in
    effect (the next write corrects it), never an effective change without its line."""
    import levibot_pipelines.adapters.killswitch_store as store

    ks = KillSwitch(tmp_path)
    ks.engage("REDUCING", "first", by="alice", now_ms=1_000)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_text_atomic", crash)
    with pytest.raises(OSError, match="disk full"):
        ks.engage("HALTED", "second", by="bob", now_ms=2_000)
    last = ks.history()[-1]
    assert (last["old"], last["new"], last["by"], last["ts"]) == (
        "REDUCING",
        "HALTED",
        "bob",
        2_000,
    )
    assert ks.status().state == "REDUCING"  # the state file was not replaced
    monkeypatch.undo()
    assert ks.engage("HALTED", "second", by="bob", now_ms=3_000).state == "HALTED"
