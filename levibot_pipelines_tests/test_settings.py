from pathlib import Path

import pytest

from levibot_pipelines.settings import Settings, SettingsError


def test_defaults(tmp_path):
    s = Settings.from_env({"LEVIBOT_HOME": str(tmp_path)})
    assert s.home == tmp_path.resolve()
    assert s.source == "synthetic"
    assert s.exchange == "binance"
    assert s.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert s.timeframe_ms == 900_000
    assert s.start_ms == 1_735_689_600_000  # 2025-01-01 00:00 UTC
    assert s.warehouse_path == tmp_path.resolve() / "warehouse.duckdb"
    assert s.exchange_api_url is None and s.alert_webhook is None


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
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.files_dir == Path(tmp_path).resolve()
    assert s.start_ms == 1_680_307_200_000


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
    ],
)
def test_invalid_values_name_the_variable(tmp_path, env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({"LEVIBOT_HOME": str(tmp_path), **env})


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
    assert (s.slippage_for("BTCUSDT"), s.slippage_for("ETHUSDT"), s.slippage_for("SOLUSDT")) == (
        1.0,
        2.0,
        4.5,
    )
    assert s.allow_short is True and s.max_uncertainty is None and s.fee_bps == 7.5
    flat = Settings.from_env({"LEVIBOT_HOME": str(tmp_path), "LEVIBOT_SLIPPAGE_BPS": "3"})
    assert flat.slippage_for("SOLUSDT") == 3.0 and flat.allow_short is False


def _plain(value):
    """Settings holds tuples (hashable, frozen); resources hold lists and dicts."""
    if isinstance(value, dict):
        return sorted(value.items())
    if isinstance(value, tuple | list):
        return [tuple(v) if isinstance(v, list) else v for v in value]
    return value


@pytest.mark.parametrize("resource", ["MarketDataResource", "ModelResource", "TradingResource"])
def test_resource_defaults_are_the_settings_defaults(resource):
    # The resources repeat Settings' fields (Dagster needs them declared); a default that
    # drifted from Settings would change behaviour for anyone building a resource by hand.
    import dataclasses

    from levibot_pipelines.defs import resources

    cls = getattr(resources, resource)
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    checked = 0
    for name, field in cls.model_fields.items():
        if field.is_required() or name not in defaults:
            continue
        want = defaults[name]
        assert _plain(field.get_default(call_default_factory=True)) == _plain(want), (
            f"{resource}.{name} defaults to {field.default!r}, Settings.{name} to {want!r}"
        )
        checked += 1
    assert checked >= 3, f"{resource}: only {checked} defaults compared"


def test_resources_carry_every_non_default_setting(tmp_path):
    from levibot_pipelines.defs.resources import MarketDataResource, TradingResource

    s = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path),
            "LEVIBOT_SYMBOLS": "BTCUSDT,ETHUSDT",
            "LEVIBOT_TIMEFRAME": "1h",
            "LEVIBOT_FEE_BPS": "7.5",
            "LEVIBOT_SLIPPAGE_BPS": "BTCUSDT=1,ETHUSDT=3.5",
            "LEVIBOT_ALLOW_SHORT": "true",
            "LEVIBOT_KILL_MAX_DRAWDOWN": "0.1",
            "LEVIBOT_DRIFT_WINDOW": "96",
            "LEVIBOT_MAX_STALENESS_MINUTES": "20",
        }
    )
    trading = TradingResource.from_settings(s).settings()
    market = MarketDataResource.from_settings(s).settings()
    assert trading.symbols == market.symbols == ("BTCUSDT", "ETHUSDT")
    assert trading.timeframe == market.timeframe == "1h"
    assert (trading.fee_bps, trading.allow_short, trading.kill_max_drawdown) == (7.5, True, 0.1)
    assert dict(trading.slippage_bps) == {"BTCUSDT": 1.0, "ETHUSDT": 3.5}
    assert trading.drift_window == 96
    assert trading.max_staleness_minutes == market.max_staleness_minutes == 20.0
