"""Settings: one frozen object built from ``LEVIBOT_*`` environment variables.

This is the only module that reads the environment. Everything else receives a ``Settings``
(or the plain values it holds), so tests build one explicitly with ``Settings.from_env(env)``.
Invalid values fail at start with a message naming the variable and the allowed values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from levibot_pipelines.core.data.timeframes import TIMEFRAME_MS

SOURCES = ("synthetic", "ccxt", "files")
PROFILES = ("auto", "small", "seed")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
DEFAULT_START = "2025-01-01"


class SettingsError(ValueError):
    """A LEVIBOT_* variable holds a value the pipeline cannot run with."""


@dataclass(frozen=True)
class Settings:
    home: Path
    source: str = "synthetic"
    exchange: str = "binance"
    exchange_api_url: str | None = None
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    timeframe: str = "15m"
    start: str = DEFAULT_START
    files_dir: Path | None = None
    alert_webhook: str | None = None
    synthetic_seed: int = 7
    label_horizon: int = 1
    max_staleness_minutes: float = 5.0
    fail_staleness_minutes: float = 30.0
    ingest_cron: str = "1-59/15 * * * *"
    profile: str = "auto"
    walk: tuple[int, int, int, int] = (20_000, 3_000, 3_000, 4_000)
    purge: int = 130
    epochs: int = 4
    mc_samples: int = 50
    report_folds: int = 3
    retrain_cron: str = "30 0 * * *"
    retrain_timezone: str = "UTC"
    mlflow_tracking_uri: str | None = None
    mlflow_ui: str = "http://127.0.0.1:5000"
    fee_bps: float = 10.0
    slippage_bps: tuple[tuple[str, float], ...] = ()
    default_slippage_bps: float = 2.0
    allow_short: bool = False
    entry_threshold: float = 0.55
    max_uncertainty: float | None = 0.10
    kill_max_drawdown: float = 0.20
    kill_staleness_minutes: float = 60.0
    reducing_factor: float = 0.5
    psi_warn: float = 0.10
    psi_error: float = 0.25
    drift_window: int = 672
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    pushgateway_url: str | None = None

    def slippage_for(self, symbol: str) -> float:
        """Slippage in bps per side for ``symbol`` (LEVIBOT_SLIPPAGE_BPS)."""
        return dict(self.slippage_bps).get(symbol, self.default_slippage_bps)

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: LEVIBOT_MLFLOW_TRACKING_URI, else sqlite under the home."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def timeframe_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    @property
    def start_ms(self) -> int:
        return int(datetime.fromisoformat(self.start).replace(tzinfo=UTC).timestamp() * 1000)

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from ``env`` (default: the process environment) with ``overrides``
        (e.g. command-line options, keyed by variable name) on top, validating each value."""
        env = {**(os.environ if env is None else env), **(overrides or {})}

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name)
            return default if value is None or value.strip() == "" else value.strip()

        home = Path(get("LEVIBOT_HOME", "./.levibot")).expanduser().resolve()
        source = _choice("LEVIBOT_SOURCE", get("LEVIBOT_SOURCE", "synthetic"), SOURCES)
        timeframe = _choice("LEVIBOT_TIMEFRAME", get("LEVIBOT_TIMEFRAME", "15m"), TIMEFRAME_MS)
        symbols = _symbols(get("LEVIBOT_SYMBOLS", ",".join(DEFAULT_SYMBOLS)))
        start = _iso_date("LEVIBOT_START", get("LEVIBOT_START", DEFAULT_START))
        files_dir = get("LEVIBOT_FILES_DIR")
        if source == "files" and files_dir is None:
            raise SettingsError("LEVIBOT_FILES_DIR must be set when LEVIBOT_SOURCE=files")
        exchange = get("LEVIBOT_EXCHANGE", "binance").lower()
        if source == "ccxt":
            import ccxt  # only when it is the configured source: it is slow to import

            if exchange not in ccxt.exchanges:
                raise SettingsError(
                    f"LEVIBOT_EXCHANGE={exchange!r} is not a ccxt exchange id; expected one of "
                    f"{len(ccxt.exchanges)} such as binance, bybit, kraken, okx"
                )
        api_url = get("LEVIBOT_EXCHANGE_API_URL")
        if api_url is not None and not api_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"LEVIBOT_EXCHANGE_API_URL={api_url!r}: expected an http:// or https:// URL"
            )
        webhook = get("LEVIBOT_ALERT_WEBHOOK")
        if webhook is not None and not webhook.startswith(("http://", "https://")):
            raise SettingsError(
                f"LEVIBOT_ALERT_WEBHOOK={webhook!r}: expected an http:// or https:// URL"
            )
        warn = _positive_float(
            "LEVIBOT_MAX_STALENESS_MINUTES", get("LEVIBOT_MAX_STALENESS_MINUTES", "5")
        )
        fail = _positive_float(
            "LEVIBOT_FAIL_STALENESS_MINUTES", get("LEVIBOT_FAIL_STALENESS_MINUTES", "30")
        )
        if fail < warn:
            raise SettingsError(
                f"LEVIBOT_FAIL_STALENESS_MINUTES={fail} must be >= "
                f"LEVIBOT_MAX_STALENESS_MINUTES={warn}"
            )
        slippage, default_slip = _slippage(get("LEVIBOT_SLIPPAGE_BPS", "2"), symbols)
        max_unc = get("LEVIBOT_MAX_UNCERTAINTY", "0.10")
        psi_warn = _number("LEVIBOT_PSI_WARN", get("LEVIBOT_PSI_WARN", "0.1"), low=0.0, strict=True)
        psi_error = _number("LEVIBOT_PSI_ERROR", get("LEVIBOT_PSI_ERROR", "0.25"), low=0.0)
        if psi_error < psi_warn:
            raise SettingsError(
                f"LEVIBOT_PSI_ERROR={psi_error} must be >= LEVIBOT_PSI_WARN={psi_warn}"
            )
        pushgateway = get("LEVIBOT_PUSHGATEWAY_URL")
        if pushgateway is not None and not pushgateway.startswith(("http://", "https://")):
            raise SettingsError(
                f"LEVIBOT_PUSHGATEWAY_URL={pushgateway!r}: expected an http:// or https:// URL"
            )
        return cls(
            home=home,
            source=source,
            exchange=exchange,
            exchange_api_url=api_url,
            symbols=symbols,
            timeframe=timeframe,
            start=start,
            files_dir=Path(files_dir).expanduser().resolve() if files_dir else None,
            alert_webhook=webhook,
            synthetic_seed=_int("LEVIBOT_SYNTHETIC_SEED", get("LEVIBOT_SYNTHETIC_SEED", "7")),
            label_horizon=_positive_int("LEVIBOT_LABEL_HORIZON", get("LEVIBOT_LABEL_HORIZON", "1")),
            max_staleness_minutes=warn,
            fail_staleness_minutes=fail,
            ingest_cron=get("LEVIBOT_INGEST_CRON", "1-59/15 * * * *"),
            profile=_choice("LEVIBOT_PROFILE", get("LEVIBOT_PROFILE", "auto"), PROFILES),
            walk=_walk(get("LEVIBOT_WALK", "20000,3000,3000,4000")),
            purge=_positive_int("LEVIBOT_PURGE", get("LEVIBOT_PURGE", "130")),
            epochs=_positive_int("LEVIBOT_EPOCHS", get("LEVIBOT_EPOCHS", "4")),
            mc_samples=_positive_int("LEVIBOT_MC_SAMPLES", get("LEVIBOT_MC_SAMPLES", "50")),
            report_folds=_positive_int("LEVIBOT_REPORT_FOLDS", get("LEVIBOT_REPORT_FOLDS", "3")),
            retrain_cron=get("LEVIBOT_RETRAIN_CRON", "30 0 * * *"),
            retrain_timezone=_timezone(get("LEVIBOT_RETRAIN_TIMEZONE", "UTC")),
            mlflow_tracking_uri=get("LEVIBOT_MLFLOW_TRACKING_URI"),
            mlflow_ui=get("LEVIBOT_MLFLOW_UI", "http://127.0.0.1:5000"),
            fee_bps=_number("LEVIBOT_FEE_BPS", get("LEVIBOT_FEE_BPS", "10"), low=0.0),
            slippage_bps=slippage,
            default_slippage_bps=default_slip,
            allow_short=_bool("LEVIBOT_ALLOW_SHORT", get("LEVIBOT_ALLOW_SHORT", "false")),
            entry_threshold=_number(
                "LEVIBOT_ENTRY_THRESHOLD", get("LEVIBOT_ENTRY_THRESHOLD", "0.55"), 0.5, 1.0, True
            ),
            max_uncertainty=None
            if max_unc.lower() == "none"
            else _number("LEVIBOT_MAX_UNCERTAINTY", max_unc, low=0.0),
            kill_max_drawdown=_number(
                "LEVIBOT_KILL_MAX_DRAWDOWN", get("LEVIBOT_KILL_MAX_DRAWDOWN", "0.2"), 0.0, 1.0, True
            ),
            kill_staleness_minutes=_positive_float(
                "LEVIBOT_KILL_STALENESS_MINUTES", get("LEVIBOT_KILL_STALENESS_MINUTES", "60")
            ),
            reducing_factor=_number(
                "LEVIBOT_REDUCING_FACTOR", get("LEVIBOT_REDUCING_FACTOR", "0.5"), 0.0, 1.0, True
            ),
            psi_warn=psi_warn,
            psi_error=psi_error,
            drift_window=_positive_int("LEVIBOT_DRIFT_WINDOW", get("LEVIBOT_DRIFT_WINDOW", "672")),
            api_host=get("LEVIBOT_API_HOST", "127.0.0.1"),
            api_port=_positive_int("LEVIBOT_API_PORT", get("LEVIBOT_API_PORT", "8000")),
            pushgateway_url=pushgateway,
        )


def _choice(name: str, value: str, allowed) -> str:
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not allowed; expected one of {sorted(allowed)}")
    return value


def _symbols(raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    bad = [s for s in symbols if not s.isalnum()]
    if not symbols or bad:
        raise SettingsError(
            f"LEVIBOT_SYMBOLS={raw!r}: expected comma-separated exchange symbols like "
            "'BTCUSDT,ETHUSDT,SOLUSDT' (letters and digits only)"
        )
    if len(set(symbols)) != len(symbols):
        raise SettingsError(f"LEVIBOT_SYMBOLS={raw!r} lists a symbol twice")
    return symbols


def _walk(raw: str) -> tuple[int, int, int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SettingsError(
            f"LEVIBOT_WALK={raw!r}: expected four positive bar counts TRAIN,VAL,CALIB,TEST "
            "such as 20000,3000,3000,4000"
        )
    train, val, calib, test = (int(p) for p in parts)
    return train, val, calib, test


def _timezone(raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"LEVIBOT_RETRAIN_TIMEZONE={raw!r}: expected an IANA time zone such as UTC "
            "or Europe/Berlin"
        ) from None
    return raw


def _iso_date(name: str, raw: str) -> str:
    try:
        datetime.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an ISO date such as 2025-01-01") from None
    return raw


def _int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an integer") from None


def _positive_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 1:
        raise SettingsError(f"{name}={raw!r}: expected an integer >= 1")
    return value


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of minutes") from None
    if not value > 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of minutes")
    return value


def _number(
    name: str,
    raw: str,
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
) -> float:
    """A float in ``[low, high]`` (``(low, high)`` when ``strict``)."""
    lo = "(" if strict else "["
    hi = ")" if strict else "]"
    bounds = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number in {bounds}") from None
    below = low is not None and (value <= low if strict else value < low)
    above = high is not None and (value >= high if strict else value > high)
    if not value == value or below or above:
        raise SettingsError(f"{name}={raw!r}: expected a number in {bounds}")
    return value


def _bool(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _slippage(raw: str, symbols: tuple[str, ...]) -> tuple[tuple[tuple[str, float], ...], float]:
    """``"2"`` (every symbol) or ``"BTCUSDT=1,SOLUSDT=4"`` (others 2) -> (per symbol, default)."""
    if "=" not in raw:
        return (), _number("LEVIBOT_SLIPPAGE_BPS", raw, low=0.0)
    pairs = []
    for part in raw.split(","):
        symbol, _, value = part.partition("=")
        symbol = symbol.strip().upper()
        if symbol not in symbols:
            raise SettingsError(
                f"LEVIBOT_SLIPPAGE_BPS={raw!r}: {symbol!r} is not one of LEVIBOT_SYMBOLS "
                f"{list(symbols)}"
            )
        pairs.append((symbol, _number("LEVIBOT_SLIPPAGE_BPS", value.strip(), low=0.0)))
    return tuple(pairs), 2.0
