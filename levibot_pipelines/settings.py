"""Settings: one frozen object in groups, built from ``LEVIBOT_*`` environment variables.

This is the only module that reads the environment. Everything else receives a ``Settings``, one
of its groups, or the plain values it holds, so tests build one with ``Settings.from_env(env)``
or directly (``Settings(home=..., models=ModelSettings(mc_samples=5))``).

Groups: ``market`` (where candles come from), ``models`` (training and evaluation), ``trading``
(policy, costs, kill-switch, drift), ``serving`` (API, Pushgateway) and ``alerts`` (freshness
limits, webhook). Each setting has ONE default: the field default of its group's dataclass;
``from_env`` reads only the variables that are set and leaves the rest to those defaults.
Invalid values fail at start with a message naming the variable and the allowed values.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from levibot_pipelines.core.data.timeframes import TIMEFRAME_MS

SOURCES = ("synthetic", "ccxt", "files")
PROFILES = ("auto", "small", "seed")
PRECISIONS = ("auto", "bf16", "fp32")  # core.models.precision.PRECISIONS
DEFAULT_HOME = "./.levibot"


class SettingsError(ValueError):
    """A LEVIBOT_* variable holds a value the pipeline cannot run with."""


@dataclass(frozen=True)
class MarketSettings:
    """Where candles come from: the source, the exchange, the symbols and the bar grid; and
    where the stored data lives: ``data_url`` (LEVIBOT_DATA_URL) None (default) keeps the bars,
    the feature table, the reports and the published predictions under ``home``;
    ``s3://bucket/prefix`` puts them in that bucket (``adapters.object_store``; credentials
    from the AWS_* environment only)."""

    source: str = "synthetic"
    exchange: str = "binance"
    exchange_api_url: str | None = None
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    timeframe: str = "15m"
    start: str = "2025-01-01"
    files_dir: Path | None = None
    synthetic_seed: int = 7
    synthetic_edge: str | None = None  # "BPS@HORIZON": a planted reversal (core.data.synthetic)
    ingest_cron: str = "*/15 * * * *"
    source_retry_seconds: float = 60.0  # per symbol and tick, failed exchange requests + backoff
    data_url: str | None = None  # LEVIBOT_DATA_URL: s3://bucket/prefix, or None for the home

    @property
    def timeframe_ms(self) -> int:
        return TIMEFRAME_MS[self.timeframe]

    @property
    def start_ms(self) -> int:
        return int(datetime.fromisoformat(self.start).replace(tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class ModelSettings:
    """Labels, model sizes, the walk-forward layout, retraining and the MLflow store."""

    label_horizon: int = 1
    profile: str = "auto"
    precision: str = "auto"  # Transformer training and MC inference: auto, bf16, fp32
    walk: tuple[int, int, int, int] = (20_000, 3_000, 3_000, 4_000)
    purge: int = 130
    epochs: int = 4
    mc_samples: int = 50
    report_folds: int = 3
    # auto profile: seed on a CPU when its estimate fits this; the retrain shares the machine's
    # cores with the live loop, so half an hour at most (a 2-core CPU without AMX: ~1 h, small)
    train_budget_min: float = 30.0
    retrain_cron: str = "30 0 * * *"
    retrain_timezone: str = "UTC"
    mlflow_tracking_uri: str | None = None
    mlflow_ui: str = "http://127.0.0.1:5000"


@dataclass(frozen=True)
class TradingSettings:
    """The policy, its costs, the kill-switch limits and the drift thresholds."""

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
    horizons: tuple[int, ...] = (1, 4, 16, 48)  # bars the decision engine may hold (its grid)

    def slippage_for(self, symbol: str) -> float:
        """Slippage in bps per side for ``symbol`` (LEVIBOT_SLIPPAGE_BPS)."""
        return dict(self.slippage_bps).get(symbol, self.default_slippage_bps)


@dataclass(frozen=True)
class ServingSettings:
    """The HTTP API's address, its optional bearer token and the optional Prometheus
    Pushgateway. ``api_token`` (LEVIBOT_API_TOKEN) is a secret: it is kept out of ``repr`` and
    of every message; None (default) serves without authentication. ``live_window``: the newest
    matured published bars the live scores are computed over (``live_scores``).
    ``shadow_min_bars``: the matured bars a shadow challenger and its champion must both have
    been scored on before the shadow rule may promote or retire it
    (``core.evaluation.shadow_rule``). Live recalibration (``live_recalibration``,
    ``usecases.recalibration``): ``recal_min_bars`` matured bars a map is fitted on (the
    newest), ``recal_interval_hours`` the least time between two fits of one symbol's model,
    ``recal_shadow_bars`` the bars matured after a fit that its candidate is judged on."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    pushgateway_url: str | None = None
    api_token: str | None = field(default=None, repr=False)
    live_window: int = 500
    shadow_min_bars: int = 500
    recal_min_bars: int = 2000
    recal_interval_hours: float = 24.0
    recal_shadow_bars: int = 500


@dataclass(frozen=True)
class AlertSettings:
    """Data-time freshness limits (checks, alert sensor, API ``stale``/``/healthz``), the
    optional alert webhook and the run-time limit above which a STARTED run is alerted."""

    max_staleness_minutes: float = 5.0
    fail_staleness_minutes: float = 30.0
    alert_webhook: str | None = None
    max_run_minutes: float = 120.0


EXECUTORS = ("local", "celery")


@dataclass(frozen=True)
class ClusterSettings:
    """Where steps run. ``local`` (default): the laptop's executors, in the run's own process
    for the small jobs and one subprocess per step for the others. ``celery``: every step is a
    Celery task on the workers (deploy/cluster/worker.sh), queue ``gpu`` for the Transformer
    training and ``cpu`` for everything else, with ``celery_broker`` and ``celery_backend``
    (e.g. ``redis://host:6379/0`` and ``/1``) as the broker and the result backend. Both URLs
    may carry a password: they are kept out of ``repr`` and read from the environment only."""

    executor: str = "local"
    celery_broker: str | None = field(default=None, repr=False)
    celery_backend: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Settings:
    home: Path
    market: MarketSettings = field(default_factory=MarketSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    trading: TradingSettings = field(default_factory=TradingSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
        defaults: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from ``env`` (default: the process environment) with ``overrides``
        (e.g. command-line options, keyed by variable name) on top, validating each value.
        ``defaults`` (keyed by variable name, e.g. a command's own defaults such as
        ``levibot demo``'s) apply only to variables that ``env`` does not set. A variable that
        is unset or blank takes its group's default."""
        env = {**(defaults or {}), **(os.environ if env is None else env), **(overrides or {})}
        raw = {
            name: value.strip()
            for name, value in env.items()
            if name.startswith("LEVIBOT_") and value is not None and value.strip() != ""
        }
        values: dict[str, dict[str, object]] = {g: {} for g in GROUPS}
        for name, (group, attr, parse) in VARIABLES.items():
            if name in raw:
                values[group][attr] = parse(name, raw[name])
        market = MarketSettings(**values["market"])
        if "LEVIBOT_SLIPPAGE_BPS" in raw:
            per_symbol, default = _slippage(raw["LEVIBOT_SLIPPAGE_BPS"], market.symbols)
            values["trading"] |= {"slippage_bps": per_symbol}
            if default is not None:
                values["trading"] |= {"default_slippage_bps": default}
        settings = cls(
            home=Path(raw.get("LEVIBOT_HOME", DEFAULT_HOME)).expanduser().resolve(),
            market=market,
            **{g: GROUPS[g](**values[g]) for g in GROUPS if g != "market"},
        )
        _check_together(settings)
        return settings


GROUPS: dict[str, type] = {
    "market": MarketSettings,
    "models": ModelSettings,
    "trading": TradingSettings,
    "serving": ServingSettings,
    "alerts": AlertSettings,
    "cluster": ClusterSettings,
}


def _check_together(s: Settings) -> None:
    """Rules between variables, checked once every value has parsed."""
    m, a, t = s.market, s.alerts, s.trading
    if m.source == "files" and m.files_dir is None:
        raise SettingsError("LEVIBOT_FILES_DIR must be set when LEVIBOT_SOURCE=files")
    if m.source == "ccxt":
        import ccxt  # only when it is the configured source: it is slow to import

        if m.exchange not in ccxt.exchanges:
            raise SettingsError(
                f"LEVIBOT_EXCHANGE={m.exchange!r} is not a ccxt exchange id; expected one of "
                f"{len(ccxt.exchanges)} such as binance, bybit, kraken, okx"
            )
    if a.fail_staleness_minutes < a.max_staleness_minutes:
        raise SettingsError(
            f"LEVIBOT_FAIL_STALENESS_MINUTES={a.fail_staleness_minutes} must be >= "
            f"LEVIBOT_MAX_STALENESS_MINUTES={a.max_staleness_minutes}"
        )
    c = s.cluster
    if c.executor == "celery" and not (c.celery_broker and c.celery_backend):
        raise SettingsError(
            "LEVIBOT_EXECUTOR=celery needs LEVIBOT_CELERY_BROKER and LEVIBOT_CELERY_BACKEND "
            "(e.g. redis://host:6379/0 and redis://host:6379/1)"
        )
    if t.psi_error < t.psi_warn:
        raise SettingsError(
            f"LEVIBOT_PSI_ERROR={t.psi_error} must be >= LEVIBOT_PSI_WARN={t.psi_warn}"
        )


def _choice(allowed) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        if value not in allowed:
            raise SettingsError(
                f"{name}={value!r} is not allowed; expected one of {sorted(allowed)}"
            )
        return value

    return parse


def _text(name: str, raw: str) -> str:
    return raw


def _lower(name: str, raw: str) -> str:
    return raw.lower()


_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


def _data_url(name: str, raw: str) -> str:
    """``s3://bucket`` or ``s3://bucket/prefix`` (trailing slashes dropped): a valid bucket
    name, no credentials and no empty, ``.`` or ``..`` parts in the prefix."""
    bucket, _, prefix = raw.removeprefix("s3://").partition("/")
    parts = prefix.rstrip("/").split("/") if prefix.rstrip("/") else []
    if (
        not raw.startswith("s3://")
        or not _S3_BUCKET.fullmatch(bucket)
        or any(p in ("", ".", "..") for p in parts)
    ):
        shown = raw if "@" not in raw else "(value not shown: it holds '@')"
        raise SettingsError(
            f"{name}={shown!r}: expected s3://BUCKET or s3://BUCKET/PREFIX (bucket: 3-63 "
            "lower-case letters, digits, dots, hyphens; credentials come from AWS_* variables, "
            "never the URL); unset keeps the data under LEVIBOT_HOME"
        )
    return f"s3://{bucket}" + (f"/{'/'.join(parts)}" if parts else "")


def _url(name: str, raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise SettingsError(f"{name}={raw!r}: expected an http:// or https:// URL")
    return raw


def _broker_url(name: str, raw: str) -> str:
    """A Celery broker or result-backend URL (``redis://``, ``rediss://``, ``amqp://``...).
    The message names the scheme, never the URL: it may carry a password."""
    scheme = raw.partition("://")[0]
    if "://" not in raw or scheme not in BROKER_SCHEMES:
        raise SettingsError(
            f"{name}: expected a URL starting with one of {sorted(BROKER_SCHEMES)}:// "
            f"(value not shown), got scheme {scheme if '://' in raw else None!r}"
        )
    return raw


BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel", "db+postgresql")

API_TOKEN_MIN_LENGTH = 16


def _secret_token(name: str, raw: str) -> str:
    """A bearer token: at least 16 printable ASCII characters, no spaces. The message never
    repeats the value (it is a secret)."""
    printable = raw.isascii() and raw.isprintable() and " " not in raw
    if len(raw) < API_TOKEN_MIN_LENGTH or not printable:
        raise SettingsError(
            f"{name}: expected at least {API_TOKEN_MIN_LENGTH} printable ASCII characters "
            "without spaces (value not shown), e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _symbols(name: str, raw: str) -> tuple[str, ...]:
    symbols = tuple(s.strip().upper() for s in raw.split(",") if s.strip())
    bad = [s for s in symbols if not s.isalnum()]
    if not symbols or bad:
        raise SettingsError(
            f"{name}={raw!r}: expected comma-separated exchange symbols like "
            "'BTCUSDT,ETHUSDT,SOLUSDT' (letters and digits only)"
        )
    if len(set(symbols)) != len(symbols):
        raise SettingsError(f"{name}={raw!r} lists a symbol twice")
    return symbols


def _edge(name: str, raw: str) -> str | None:
    """``none`` -> None (no planted edge); ``"80.0@4"`` -> ``"80@4"``: the synthetic market's
    planted reversal, ``BPS@HORIZON`` with ``BPS`` > 0 and ``HORIZON`` an integer >= 1 (the
    rule of ``core.data.synthetic.PlantedEdge.parse``, which settings may not import)."""
    if raw.lower() == "none":
        return None
    bps, sep, horizon = raw.partition("@")
    try:
        value, bars = float(bps), int(horizon)
    except ValueError:
        value, bars = math.nan, 0
    if not (sep and math.isfinite(value) and value > 0 and bars >= 1):
        raise SettingsError(
            f"{name}={raw!r}: expected BPS@HORIZON, a positive total drift in bps and a "
            "horizon in bars >= 1, e.g. 80@4"
        )
    return f"{value:g}@{bars}"


def _horizons(name: str, raw: str) -> tuple[int, ...]:
    """``"1,4,16,48"`` -> ``(1, 4, 16, 48)``: distinct holding periods in bars, each >= 1."""
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise SettingsError(
            f"{name}={raw!r}: expected comma-separated holding periods in bars >= 1, "
            "such as 1,4,16,48"
        )
    horizons = tuple(int(p) for p in parts)
    if len(set(horizons)) != len(horizons):
        raise SettingsError(f"{name}={raw!r} lists a horizon twice")
    return horizons


def _walk(name: str, raw: str) -> tuple[int, int, int, int]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SettingsError(
            f"{name}={raw!r}: expected four positive bar counts TRAIN,VAL,CALIB,TEST "
            "such as 20000,3000,3000,4000"
        )
    train, val, calib, test = (int(p) for p in parts)
    return train, val, calib, test


def _timezone(name: str, raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(
            f"{name}={raw!r}: expected an IANA time zone such as UTC or Europe/Berlin"
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


def _minutes(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of minutes") from None
    if not value > 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of minutes")
    return value


def _number(
    low: float | None = None, high: float | None = None, strict: bool = False
) -> Callable[[str, str], float]:
    """A parser of a float in ``[low, high]`` (``(low, high)`` when ``strict``)."""
    lo = "(" if strict else "["
    hi = ")" if strict else "]"
    bounds = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number in {bounds}") from None
        below = low is not None and (value <= low if strict else value < low)
        above = high is not None and (value >= high if strict else value > high)
        if not value == value or below or above:
            raise SettingsError(f"{name}={raw!r}: expected a number in {bounds}")
        return value

    return parse


def _optional(parse: Callable[[str, str], float]) -> Callable[[str, str], float | None]:
    """``none`` (any case) means no limit; anything else goes to ``parse``."""
    return lambda name, raw: None if raw.lower() == "none" else parse(name, raw)


def _bool(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _slippage(
    raw: str, symbols: tuple[str, ...]
) -> tuple[tuple[tuple[str, float], ...], float | None]:
    """``"2"`` (every symbol) -> ((), 2.0); ``"BTCUSDT=1,SOLUSDT=4"`` -> (per symbol, None:
    the others keep the default)."""
    parse = _number(low=0.0)
    if "=" not in raw:
        return (), parse("LEVIBOT_SLIPPAGE_BPS", raw)
    pairs = []
    for part in raw.split(","):
        symbol, _, value = part.partition("=")
        symbol = symbol.strip().upper()
        if symbol not in symbols:
            raise SettingsError(
                f"LEVIBOT_SLIPPAGE_BPS={raw!r}: {symbol!r} is not one of LEVIBOT_SYMBOLS "
                f"{list(symbols)}"
            )
        pairs.append((symbol, parse("LEVIBOT_SLIPPAGE_BPS", value.strip())))
    return tuple(pairs), None


# Every variable: (group, field, parser). Defaults are the groups' field defaults, nowhere else.
# LEVIBOT_HOME and LEVIBOT_SLIPPAGE_BPS (which needs the symbols) are read in ``from_env``.
VARIABLES: dict[str, tuple[str, str, Callable[[str, str], object]]] = {
    "LEVIBOT_SOURCE": ("market", "source", _choice(SOURCES)),
    "LEVIBOT_EXCHANGE": ("market", "exchange", _lower),
    "LEVIBOT_EXCHANGE_API_URL": ("market", "exchange_api_url", _url),
    "LEVIBOT_SYMBOLS": ("market", "symbols", _symbols),
    "LEVIBOT_TIMEFRAME": ("market", "timeframe", _choice(TIMEFRAME_MS)),
    "LEVIBOT_START": ("market", "start", _iso_date),
    "LEVIBOT_FILES_DIR": ("market", "files_dir", _path),
    "LEVIBOT_SYNTHETIC_SEED": ("market", "synthetic_seed", _int),
    "LEVIBOT_SYNTHETIC_EDGE": ("market", "synthetic_edge", _edge),
    "LEVIBOT_INGEST_CRON": ("market", "ingest_cron", _text),
    "LEVIBOT_SOURCE_RETRY_SECONDS": (
        "market",
        "source_retry_seconds",
        _number(low=0.0, strict=True),
    ),
    "LEVIBOT_DATA_URL": ("market", "data_url", _data_url),
    "LEVIBOT_LABEL_HORIZON": ("models", "label_horizon", _positive_int),
    "LEVIBOT_PROFILE": ("models", "profile", _choice(PROFILES)),
    "LEVIBOT_PRECISION": ("models", "precision", _choice(PRECISIONS)),
    "LEVIBOT_WALK": ("models", "walk", _walk),
    "LEVIBOT_PURGE": ("models", "purge", _positive_int),
    "LEVIBOT_EPOCHS": ("models", "epochs", _positive_int),
    "LEVIBOT_MC_SAMPLES": ("models", "mc_samples", _positive_int),
    "LEVIBOT_REPORT_FOLDS": ("models", "report_folds", _positive_int),
    "LEVIBOT_TRAIN_BUDGET_MIN": ("models", "train_budget_min", _minutes),
    "LEVIBOT_RETRAIN_CRON": ("models", "retrain_cron", _text),
    "LEVIBOT_RETRAIN_TIMEZONE": ("models", "retrain_timezone", _timezone),
    "LEVIBOT_MLFLOW_TRACKING_URI": ("models", "mlflow_tracking_uri", _text),
    "LEVIBOT_MLFLOW_UI": ("models", "mlflow_ui", _text),
    "LEVIBOT_FEE_BPS": ("trading", "fee_bps", _number(low=0.0)),
    "LEVIBOT_ALLOW_SHORT": ("trading", "allow_short", _bool),
    "LEVIBOT_ENTRY_THRESHOLD": ("trading", "entry_threshold", _number(0.5, 1.0, strict=True)),
    "LEVIBOT_MAX_UNCERTAINTY": ("trading", "max_uncertainty", _optional(_number(low=0.0))),
    "LEVIBOT_KILL_MAX_DRAWDOWN": ("trading", "kill_max_drawdown", _number(0.0, 1.0, True)),
    "LEVIBOT_KILL_STALENESS_MINUTES": ("trading", "kill_staleness_minutes", _minutes),
    "LEVIBOT_REDUCING_FACTOR": ("trading", "reducing_factor", _number(0.0, 1.0, strict=True)),
    "LEVIBOT_PSI_WARN": ("trading", "psi_warn", _number(low=0.0, strict=True)),
    "LEVIBOT_PSI_ERROR": ("trading", "psi_error", _number(low=0.0)),
    "LEVIBOT_DRIFT_WINDOW": ("trading", "drift_window", _positive_int),
    "LEVIBOT_HORIZONS": ("trading", "horizons", _horizons),
    "LEVIBOT_API_HOST": ("serving", "api_host", _text),
    "LEVIBOT_API_PORT": ("serving", "api_port", _positive_int),
    "LEVIBOT_PUSHGATEWAY_URL": ("serving", "pushgateway_url", _url),
    "LEVIBOT_API_TOKEN": ("serving", "api_token", _secret_token),
    # matured published bars per symbol that the rolling live scores cover (live_scores)
    "LEVIBOT_LIVE_WINDOW": ("serving", "live_window", _positive_int),
    # matured paired bars before the shadow rule promotes or retires a challenger
    "LEVIBOT_SHADOW_MIN_BARS": ("serving", "shadow_min_bars", _positive_int),
    # live recalibration: bars a map is fitted on, hours between fits, bars of its shadow period
    "LEVIBOT_RECAL_MIN_BARS": ("serving", "recal_min_bars", _positive_int),
    "LEVIBOT_RECAL_INTERVAL_HOURS": ("serving", "recal_interval_hours", _number(0.0, None, True)),
    "LEVIBOT_RECAL_SHADOW_BARS": ("serving", "recal_shadow_bars", _positive_int),
    "LEVIBOT_MAX_STALENESS_MINUTES": ("alerts", "max_staleness_minutes", _minutes),
    "LEVIBOT_FAIL_STALENESS_MINUTES": ("alerts", "fail_staleness_minutes", _minutes),
    "LEVIBOT_ALERT_WEBHOOK": ("alerts", "alert_webhook", _url),
    "LEVIBOT_MAX_RUN_MINUTES": ("alerts", "max_run_minutes", _minutes),
    "LEVIBOT_EXECUTOR": ("cluster", "executor", _choice(EXECUTORS)),
    "LEVIBOT_CELERY_BROKER": ("cluster", "celery_broker", _broker_url),
    "LEVIBOT_CELERY_BACKEND": ("cluster", "celery_backend", _broker_url),
}
