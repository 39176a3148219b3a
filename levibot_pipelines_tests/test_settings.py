from pathlib import Path

import pytest

from levibot_pipelines.settings import Settings, SettingsError


def test_defaults(tmp_path):
    s = Settings.from_env({"LEVIBOT_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.market.source == "synthetic"
    assert s.market.exchange == "binance"
    assert s.market.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert s.market.timeframe_ms == 900_000
    assert s.market.start_ms == 1_735_689_600_000  # 2025-01-01 00:00 UTC
    assert s.market.exchange_api_url is None and s.alerts.alert_webhook is None


def test_values_are_parsed_and_normalised(tmp_path):
    s = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_SOURCE": "files",
            "LEVIBOT_FILES_DIR": str(tmp_path),
            "LEVIBOT_SYMBOLS": " btcusdt, ETHUSDT ",
            "LEVIBOT_EXCHANGE_API_URL": "http://127.0.0.1:8080/api/v3",
            "LEVIBOT_START": "2023-04-01",
        }
    )
    assert s.market.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.market.files_dir == Path(tmp_path).resolve()
    assert s.market.start_ms == 1_680_307_200_000


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"LEVIBOT_SOURCE": "kafka"}, r"LEVIBOT_SOURCE='kafka'.*\['ccxt', 'files', 'synthetic'\]"),
        ({"LEVIBOT_TIMEFRAME": "7m"}, r"LEVIBOT_TIMEFRAME='7m'.*'15m'"),
        ({"LEVIBOT_SYMBOLS": "BTC/USDT"}, r"LEVIBOT_SYMBOLS='BTC/USDT'"),
        ({"LEVIBOT_SYMBOLS": "BTCUSDT,BTCUSDT"}, r"LEVIBOT_SYMBOLS=.*twice"),
        ({"LEVIBOT_START": "yesterday"}, r"LEVIBOT_START='yesterday'.*ISO date"),
        ({"LEVIBOT_SOURCE": "files"}, r"LEVIBOT_FILES_DIR must be set"),
        (
            {"LEVIBOT_SOURCE": "ccxt", "LEVIBOT_EXCHANGE": "mtgox"},
            r"LEVIBOT_EXCHANGE='mtgox' is not a ccxt exchange id",
        ),
        ({"LEVIBOT_EXCHANGE_API_URL": "localhost:8080"}, r"LEVIBOT_EXCHANGE_API_URL='localhost"),
        ({"LEVIBOT_ALERT_WEBHOOK": "hooks"}, r"LEVIBOT_ALERT_WEBHOOK='hooks'"),
        ({"LEVIBOT_LABEL_HORIZON": "0"}, r"LEVIBOT_LABEL_HORIZON='0'.*>= 1"),
        ({"LEVIBOT_MAX_STALENESS_MINUTES": "-1"}, r"LEVIBOT_MAX_STALENESS_MINUTES='-1'"),
        (
            {"LEVIBOT_MAX_STALENESS_MINUTES": "10", "LEVIBOT_FAIL_STALENESS_MINUTES": "5"},
            r"LEVIBOT_FAIL_STALENESS_MINUTES=5.0 must be >=",
        ),
        ({"LEVIBOT_FEE_BPS": "-1"}, r"LEVIBOT_FEE_BPS='-1': expected a number in \[0.0, inf\]"),
        ({"LEVIBOT_ENTRY_THRESHOLD": "0.5"}, r"LEVIBOT_ENTRY_THRESHOLD='0.5'.*\(0.5, 1.0\)"),
        ({"LEVIBOT_SLIPPAGE_BPS": "XRPUSDT=3"}, r"'XRPUSDT' is not one of LEVIBOT_SYMBOLS"),
        ({"LEVIBOT_SLIPPAGE_BPS": "BTCUSDT=cheap"}, r"LEVIBOT_SLIPPAGE_BPS='cheap'"),
        ({"LEVIBOT_ALLOW_SHORT": "maybe"}, r"LEVIBOT_ALLOW_SHORT='maybe': expected true or false"),
        ({"LEVIBOT_KILL_MAX_DRAWDOWN": "1.5"}, r"LEVIBOT_KILL_MAX_DRAWDOWN='1.5'"),
        (
            {"LEVIBOT_PSI_WARN": "0.3", "LEVIBOT_PSI_ERROR": "0.2"},
            r"LEVIBOT_PSI_ERROR=0.2 must be >= LEVIBOT_PSI_WARN=0.3",
        ),
        ({"LEVIBOT_PUSHGATEWAY_URL": "gateway:9091"}, r"LEVIBOT_PUSHGATEWAY_URL='gateway"),
        ({"LEVIBOT_HORIZONS": "0,4"}, r"LEVIBOT_HORIZONS='0,4'.*bars >= 1"),
        ({"LEVIBOT_HORIZONS": "4,16,4"}, r"LEVIBOT_HORIZONS='4,16,4' lists a horizon twice"),
    ],
)
def test_invalid_values_name_the_variable(tmp_path, env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({"LEVIBOT_HOME": str(tmp_path), **env})


def test_horizons_and_the_year_of_the_timeframe(tmp_path):
    from levibot_pipelines.usecases.report import backtest_config

    s = Settings.from_env({"LEVIBOT_HOME": str(tmp_path)})
    assert s.trading.horizons == (1, 4, 16, 48)
    assert backtest_config(s, "BTCUSDT").bars_per_year == 35_040  # 365 x 96
    s = Settings.from_env(
        {"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_HORIZONS": " 16, 4", "LEVIBOT_TIMEFRAME": "1h"}
    )
    assert s.trading.horizons == (16, 4)
    assert backtest_config(s, "BTCUSDT").bars_per_year == 8_760  # 365 x 24


def test_trading_values(tmp_path):
    s = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_SLIPPAGE_BPS": "btcusdt=1, SOLUSDT=4.5",
            "LEVIBOT_ALLOW_SHORT": "yes",
            "LEVIBOT_MAX_UNCERTAINTY": "none",
            "LEVIBOT_FEE_BPS": "7.5",
        }
    )
    # Listed symbols get their own slippage, the others the 2 bps default.
    t = s.trading
    assert [t.slippage_for(sym) for sym in ("BTCUSDT", "ETHUSDT", "SOLUSDT")] == [1.0, 2.0, 4.5]
    assert t.allow_short is True and t.max_uncertainty is None and t.fee_bps == 7.5
    flat = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_SLIPPAGE_BPS": "3"})
    assert flat.trading.slippage_for("SOLUSDT") == 3.0 and flat.trading.allow_short is False


def test_each_setting_has_one_default_and_one_variable(tmp_path):
    # The groups' field defaults are the only defaults: an empty environment gives exactly them,
    # and every field is set by one LEVIBOT_* variable (slippage and home are read in from_env).
    import dataclasses

    from levibot_pipelines.settings import GROUPS, VARIABLES

    assert Settings.from_env({"LEVIBOT_HOME": str(tmp_path)}) == Settings(home=tmp_path.resolve())
    variables = {(group, attr) for group, attr, _ in VARIABLES.values()}
    assert len(variables) == len(VARIABLES)
    fields = {(g, f.name) for g, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    assert fields - variables == {("trading", "slippage_bps"), ("trading", "default_slippage_bps")}
    assert variables <= fields
    assert [f.name for f in dataclasses.fields(Settings)] == ["home", *GROUPS]


def test_groups_read_their_variables(tmp_path):
    s = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_MC_SAMPLES": "7",
            "LEVIBOT_API_PORT": "9000",
            "LEVIBOT_MAX_STALENESS_MINUTES": "20",
            "LEVIBOT_DRIFT_WINDOW": "96",
            "LEVIBOT_TIMEFRAME": "1h",
        }
    )
    assert (s.models.mc_samples, s.serving.api_port, s.alerts.max_staleness_minutes) == (
        7,
        9000,
        20.0,
    )
    assert (s.trading.drift_window, s.market.timeframe_ms) == (96, 3_600_000)
    # Untouched settings keep their one default.
    assert (s.models.epochs, s.trading.fee_bps, s.market.source) == (4, 10.0, "synthetic")


def test_resources_hold_the_settings_not_copies(tmp_path):
    from levibot_pipelines.defs.resources import build_resources

    s = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_SYMBOLS": "BTCUSDT,ETHUSDT",
            "LEVIBOT_WALK": "600,150,150,200",
            "LEVIBOT_PURGE": "40",
            "LEVIBOT_PROFILE": "small",
        }
    )
    resources = build_resources(s)
    assert all(resources[key].settings is s for key in ("market", "models", "trading"))
    profile, cfg = resources["models"].eval_config()
    assert profile == "small"
    assert (cfg.walk.train, cfg.walk.val, cfg.walk.calib, cfg.walk.test) == (600, 150, 150, 200)
    assert cfg.walk.purge == 40 and cfg.mc_samples == s.models.mc_samples == 50
    assert resources["market"].build_source().name == "synthetic"
    assert resources["market"].store().home == s.home


def test_api_token_is_a_secret_kept_out_of_repr_and_messages(tmp_path):
    token = "Zk3-very_secret-token_0123456789"
    env = {"LEVIBOT_HOME": str(tmp_path)}
    assert Settings.from_env(env).serving.api_token is None
    s = Settings.from_env({**env, "LEVIBOT_API_TOKEN": f"  {token} "})
    assert s.serving.api_token == token
    assert token not in repr(s) and token not in str(s.serving)
    for bad in ("short-token", "has a space inside 0123456789", "tökén-0123456789abcdef"):
        with pytest.raises(SettingsError, match="LEVIBOT_API_TOKEN: expected at least 16") as exc:
            Settings.from_env({**env, "LEVIBOT_API_TOKEN": bad})
        assert bad not in str(exc.value)
