"""Risk use case: every automatic trigger written through the real kill-switch store on a temp
home; a trigger without an input is left as stored; manual engage/release."""

from levibot_pipelines.adapters.killswitch_store import KillSwitch
from levibot_pipelines.core.trading.killswitch import PsiReading, RiskInputs, RiskLimits
from levibot_pipelines.settings import Settings, TradingSettings
from levibot_pipelines.usecases.risk import engage, evaluate_kill_switch, release, risk_limits

T0 = 1_795_514_400_000  # 2026-11-24 10:00:00 UTC in ms
LIMITS = RiskLimits(staleness_minutes=60.0, max_drawdown=0.2, psi_warn=0.1, psi_error=0.25)
ALARM = PsiReading("ETHUSDT", "vol_20", 0.42, 0.3)


def test_evaluate_writes_each_trigger_and_leaves_the_others(tmp_path):
    switch = KillSwitch(tmp_path)
    inputs = RiskInputs(staleness_minutes=75.0, drift_worst=ALARM, drift_alarm=ALARM)
    status = evaluate_kill_switch(switch, inputs, LIMITS, "auto:publish", T0)
    assert status.state == "HALTED" and set(status.entries) == {"staleness", "drift"}
    assert status.entries["staleness"] == {
        "state": "HALTED",
        "reason": "newest feature bar is 75 min stale (limit 60)",
        "by": "auto:publish",
        "since": T0,
    }
    assert status.entries["drift"]["state"] == "REDUCING"
    # Only the drawdown is known now: staleness and drift stay as stored.
    dd = RiskInputs(drawdown=0.3, drawdown_symbol="BTCUSDT")
    status = evaluate_kill_switch(switch, dd, LIMITS, "auto:publish", T0 + 1)
    assert set(status.entries) == {"staleness", "drift", "drawdown"}
    assert status.entries["drawdown"]["reason"] == "paper drawdown 30.0% on BTCUSDT (limit 20%)"
    # Fresh data clears staleness alone; the history names who did what.
    fresh = RiskInputs(staleness_minutes=0.0, staleness_subject="cross_asset_features")
    status = evaluate_kill_switch(switch, fresh, LIMITS, "auto:feature_freshness_alert", T0 + 2)
    assert set(status.entries) == {"drift", "drawdown"} and status.state == "HALTED"
    assert [(h["entry"], h["new"], h["by"]) for h in switch.history()] == [
        ("staleness", "HALTED", "auto:publish"),
        ("drift", "REDUCING", "auto:publish"),
        ("drawdown", "HALTED", "auto:publish"),
        ("staleness", "ACTIVE", "auto:feature_freshness_alert"),
    ]
    assert evaluate_kill_switch(switch, RiskInputs(), LIMITS, "auto:x") == switch.status()


def test_manual_engage_and_release_all(tmp_path):
    switch = KillSwitch(tmp_path)
    evaluate_kill_switch(switch, RiskInputs(drawdown=0.5), LIMITS, "auto:publish", T0)
    assert engage(switch, "REDUCING", "thin book", "alice").entries["manual"]["by"] == "alice"
    assert release(switch, "bob", "resolved").state == "HALTED"  # the drawdown still holds
    assert release(switch, "bob", all_entries=True).state == "ACTIVE"


def test_risk_limits_from_settings(tmp_path):
    s = Settings(
        home=tmp_path,
        trading=TradingSettings(kill_staleness_minutes=30.0, kill_max_drawdown=0.1),
    )
    assert risk_limits(s) == RiskLimits(30.0, 0.1, s.trading.psi_warn, s.trading.psi_error)
