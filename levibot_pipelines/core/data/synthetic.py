"""Deterministic synthetic market: the embedded offline default. It is NOT market data.

A seeded simulator of 15m-style candles with the stylised facts a model of real crypto bars has
to cope with:

- correlated returns: every symbol loads on one common market factor (loading ``rho``);
- volatility clustering: log-volatility follows a persistent AR(1) (a stochastic-volatility
  model, Taylor 1986), shared in part across symbols;
- fat tails: Student-t shocks with 5 degrees of freedom, scaled to unit variance;
- regimes: a Markov chain over calm / trending / turbulent states that changes volatility and,
  when trending, adds a drift in the regime's direction;
- a small lead of BTC: every other symbol's return at ``t`` includes ``lead_beta`` times BTC's
  return at ``t - 1`` scaled to its own volatility, so BTC's last move carries a little signal.

Every random stream is drawn per bar from its own generator seeded by ``(seed, stream, symbol)``
and every transform is causal, so bar ``i`` depends only on the seed, the symbol, the start time
and ``i``: extending ``end_ms`` appends bars and never rewrites earlier ones (a live-feed replay).

Planted edge (optional, ``PlantedEdge``; off by default, and then every bar is unchanged): a
known, learnable inefficiency for end-to-end controls (``levibot evaluate --edge BPS@HORIZON``).
An *event* is a bar ``e`` whose own log return (before any planted drift) is large,
``|ret[e]| > EVENT_VOLS * vol`` (``vol``: the symbol's typical one-bar std, ``SymbolProfile``;
about 17% of bars). After the event bar closes, each of the next ``horizon`` bars
``e+1 .. e+horizon`` gets a drift of ``-sign(ret[e]) * bps / horizon`` bps added to its log
return: the price reverts by ``bps`` in total against the event's move, from ``open(e+1)``
(which equals ``close(e)`` here) to ``close(e+horizon)``. Overlapping events add their drifts.
The edge is causal (bar ``i`` reads events at ``i-horizon .. i-1`` only) and visible to the
features at the close of ``e`` (a large ``ret_1``, an extreme ``z_20``), so a model that learns
it finds a mean ``horizon``-bar forward return of about ``bps`` after an event, signed against it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.signal import lfilter

LEAD_SYMBOL = "BTCUSDT"


@dataclass(frozen=True)
class SymbolProfile:
    price: float  # first open, in quote currency
    vol: float  # typical one-bar log-return std
    volume: float  # typical base-asset volume per bar


PROFILES = {
    "BTCUSDT": SymbolProfile(price=42_000.0, vol=0.0030, volume=350.0),
    "ETHUSDT": SymbolProfile(price=2_300.0, vol=0.0038, volume=4_000.0),
    "SOLUSDT": SymbolProfile(price=95.0, vol=0.0055, volume=60_000.0),
}
DEFAULT_PROFILE = SymbolProfile(price=10.0, vol=0.0060, volume=100_000.0)


@dataclass(frozen=True)
class MarketParams:
    rho: float = 0.65  # loading on the common factor (return correlation ~ rho)
    lead_beta: float = 0.10  # share of BTC's previous standardised return in the others'
    sv_phi: float = 0.995  # persistence of log-volatility per bar
    sv_std: float = 0.30  # stationary std of log-volatility
    t_dof: float = 5.0  # Student-t degrees of freedom of the shocks
    regime_switch: float = 0.002  # probability per bar of leaving the current regime
    regime_vol: tuple[float, float, float] = (0.75, 1.0, 1.6)  # calm, trending, turbulent
    trend_drift: float = 0.03  # drift in trending regimes, in units of the bar's volatility


@dataclass(frozen=True)
class PlantedEdge:
    """A planted reversal after large bars (module docstring): ``bps`` > 0, the total drift in bps
    over the ``horizon`` >= 1 bars after an event, against the event's move."""

    bps: float
    horizon: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.bps) and self.bps > 0):
            raise ValueError(f"planted edge bps must be a positive number, got {self.bps!r}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"planted edge horizon must be an integer >= 1, got {self.horizon!r}")

    @classmethod
    def parse(cls, text: str) -> PlantedEdge:
        """``"80@4"`` -> ``PlantedEdge(bps=80.0, horizon=4)``; ``ValueError`` naming ``text``
        when it is not ``BPS@HORIZON`` with ``BPS`` > 0 and ``HORIZON`` an integer >= 1."""
        bps, sep, horizon = str(text).strip().partition("@")
        try:
            if not sep:
                raise ValueError
            return cls(float(bps), int(horizon))
        except ValueError:
            raise ValueError(
                f"edge {text!r}: expected BPS@HORIZON, a positive total drift in bps and a "
                "horizon in bars >= 1, e.g. 80@4"
            ) from None

    def __str__(self) -> str:
        return f"{self.bps:g}@{self.horizon}"


EVENT_VOLS = 1.5  # an event bar moves more than this many of the symbol's typical one-bar stds


def planted_drift(ret: np.ndarray, vol: float, edge: PlantedEdge) -> np.ndarray:
    """The planted edge's per-bar log-return drift, shape of ``ret`` (one-bar log returns before
    the drift; ``vol``: the symbol's typical one-bar std): for every event ``e``
    (``|ret[e]| > EVENT_VOLS * vol``), ``-sign(ret[e]) * edge.bps * 1e-4 / edge.horizon`` on
    bars ``e+1 .. e+edge.horizon``, summed over overlapping events; causal."""
    event = np.where(np.abs(ret) > EVENT_VOLS * vol, -np.sign(ret), 0.0)
    # drift[i] = per_bar * sum(event[i - horizon .. i - 1])
    spread = lfilter(np.r_[0.0, np.ones(edge.horizon)], [1.0], event)
    return spread * edge.bps * 1e-4 / edge.horizon


def _rng(seed: int, stream: str, symbol: str = "") -> np.random.Generator:
    key = zlib.crc32(f"{stream}:{symbol}".encode())
    return np.random.default_rng([seed, key])


def _student_t(rng: np.random.Generator, n: int, dof: float) -> np.ndarray:
    return rng.standard_t(dof, n) / np.sqrt(dof / (dof - 2.0))


def _log_vol(rng: np.random.Generator, n: int, p: MarketParams) -> np.ndarray:
    innovation = rng.standard_normal(n) * p.sv_std * np.sqrt(1.0 - p.sv_phi**2)
    return lfilter([1.0], [1.0, -p.sv_phi], innovation)


def _regimes(seed: int, n: int, p: MarketParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-bar regime (0 calm, 1 trending, 2 turbulent) and trend direction (+1/-1)."""
    # One generator per stream: a second draw from one generator would start at an offset that
    # depends on n, and earlier bars would change when the series is extended.
    switch = _rng(seed, "regime_switch").random(n) < p.regime_switch
    kind = np.floor(_rng(seed, "regime_kind").random(n) * 3).astype(np.int64)
    direction = np.where(_rng(seed, "regime_direction").random(n) < 0.5, -1.0, 1.0)
    epoch = np.cumsum(switch)
    first_of_epoch = np.flatnonzero(np.r_[True, switch[1:]])
    regime = kind[first_of_epoch][epoch - epoch[0]]
    trend = direction[first_of_epoch][epoch - epoch[0]]
    return regime, trend


def _returns(symbol: str, n: int, seed: int, p: MarketParams, lead: np.ndarray | None):
    prof = PROFILES.get(symbol, DEFAULT_PROFILE)
    regime, trend = _regimes(seed, n, p)
    common = _student_t(_rng(seed, "factor"), n, p.t_dof)
    own = _student_t(_rng(seed, "shock", symbol), n, p.t_dof)
    log_vol = 0.6 * _log_vol(_rng(seed, "vol"), n, p) + 0.8 * _log_vol(
        _rng(seed, "vol", symbol), n, p
    )
    # weights 0.6 and 0.8 keep the stationary variance at sv_std**2; exp(-var/2) keeps E[sigma].
    sigma = prof.vol * np.exp(log_vol - p.sv_std**2 / 2)
    sigma = sigma * np.asarray(p.regime_vol)[regime]
    shock = np.sqrt(p.rho) * common + np.sqrt(1.0 - p.rho) * own
    if lead is not None:
        # BTC's previous standardised return, mixed in at constant variance.
        prev = np.r_[0.0, lead[:-1]]
        shock = np.sqrt(1.0 - p.lead_beta**2) * shock + p.lead_beta * prev
    drift = np.where(regime == 1, trend * p.trend_drift, 0.0)
    return sigma * (shock + drift), sigma, shock


def simulate_bars(
    symbol: str,
    start_ms: int,
    end_ms: int,
    tf_ms: int,
    *,
    seed: int,
    params: MarketParams | None = None,
    edge: PlantedEdge | None = None,
) -> pl.DataFrame:
    """Candles for ``symbol`` with open times on the grid from ``start_ms`` to ``end_ms`` inclusive.

    Returns columns ``timestamp`` (ms, open time), ``open, high, low, close, volume``. Bars
    depend only on ``(seed, symbol, start_ms, index)``, so a later ``end_ms`` only appends.
    ``seed`` has no default: the pipeline passes ``LEVIBOT_SYNTHETIC_SEED``. ``edge`` (default
    None: none) plants the reversal of the module docstring (``LEVIBOT_SYNTHETIC_EDGE``).
    """
    if tf_ms <= 0:
        raise ValueError(f"tf_ms must be positive, got {tf_ms}")
    if start_ms % tf_ms:
        raise ValueError(f"start_ms={start_ms} is not on the {tf_ms} ms grid")
    p = params or MarketParams()
    n = max(0, (end_ms - start_ms) // tf_ms + 1)
    if n == 0:
        return pl.DataFrame(
            schema={
                "timestamp": pl.Int64,
                **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
            }
        )
    lead = None
    if symbol != LEAD_SYMBOL:
        _, _, lead = _returns(LEAD_SYMBOL, n, seed, p, None)
    ret, sigma, _ = _returns(symbol, n, seed, p, lead)
    prof = PROFILES.get(symbol, DEFAULT_PROFILE)
    if edge is not None:
        ret = ret + planted_drift(ret, prof.vol, edge)
    close = prof.price * np.exp(np.cumsum(ret))
    open_ = np.r_[prof.price, close[:-1]]
    up_wick = np.abs(_rng(seed, "up_wick", symbol).standard_normal(n))
    down_wick = np.abs(_rng(seed, "down_wick", symbol).standard_normal(n))
    high = np.maximum(open_, close) * np.exp(up_wick * 0.6 * sigma)
    low = np.minimum(open_, close) * np.exp(-down_wick * 0.6 * sigma)
    noise = _rng(seed, "volume", symbol).standard_normal(n)
    volume = prof.volume * np.exp(0.35 * noise) * (1.0 + np.abs(ret) / prof.vol)
    return pl.DataFrame(
        {
            "timestamp": start_ms + np.arange(n, dtype=np.int64) * tf_ms,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )
