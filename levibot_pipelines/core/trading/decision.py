"""The decision engine: trade only when a validated expected return pays for the round trip.

A model's score ``s`` (oriented so that higher means up, e.g. ``P(up)``) is mapped to the mean
``h``-bar forward log return ``mu_hat(s)`` (``ExpectedReturnMap``, fitted on a window before the
one it is used on; ``core.data.targets`` aligns the return with the fill at ``open(t+1)``). A
``DecisionPolicy`` then, at the close of every bar ``t`` and from rows ``<= t`` only:

- enters long when ``mu_hat(s_t - k u_t) - cost > margin`` and short (if ``allow_short``) when
  ``-mu_hat(s_t + k u_t) - cost > margin``; ``u_t`` is the model's uncertainty in score units
  (e.g. the MC-dropout std of ``p``) and ``k`` the ``uncertainty_penalty``: the expected return
  is read at a pessimistic score, which keeps the penalty in the map's units (bps);
- holds at least ``h`` bars (an entry decided at ``t`` fills at ``open(t+1)``; its exit can be
  decided at ``t + h`` at the earliest, filling at ``open(t+1+h)``: exactly the return the map
  was fitted on);
- then exits at the first bar whose pessimistic expected gross return for the held side is below
  ``exit_bps`` (the hysteresis; ``selection`` sets it to half the round-trip cost: a bar not
  worth half a round trip is not worth holding, while entering needs the whole cost plus the
  margin). A NaN score exits too. No stop or take-profit: the map was fitted on ``h``-bar
  returns without one, and a stop would change the payoff it validated.

``FLAT`` (``flat_policy``) never trades and carries the reason (``"no validated edge after
costs"``). Costs are in bps of notional: the round trip is ``2 * (fee + slippage)``.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np
from sklearn.isotonic import IsotonicRegression

from levibot_pipelines.core.checks import check_int, check_range
from levibot_pipelines.core.trading.backtest import CostModel, Signals

BPS = 1e-4
FLAT_MODEL = "flat"
NO_EDGE = "no validated edge after costs"
MIN_SAMPLES = 200
BIN_SIZE = 20


def round_trip_cost_bps(costs: CostModel) -> float:
    """Fees plus slippage of both legs of a trade, in bps: ``2 * (fee_bps + slippage_bps)``."""
    return 2.0 * (costs.fee_bps + costs.slippage_bps)


@dataclass(frozen=True)
class ExpectedReturnMap:
    """``mu_hat(s)``: the mean forward log return given the score, non-decreasing in ``s``.

    ``x`` / ``y``: knots (score, log return) of the fitted isotonic step function, linearly
    interpolated between knots and clipped outside them; ``n_samples``: pairs it was fitted on.
    """

    x: tuple[float, ...]
    y: tuple[float, ...]
    n_samples: int

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        if x.ndim != 1 or x.size == 0 or x.shape != y.shape:
            raise ValueError(f"x and y must be non-empty and of one length, got {x.size}, {y.size}")
        if not (np.isfinite(x).all() and np.isfinite(y).all() and (np.diff(x) >= 0).all()):
            raise ValueError(f"x must be finite and non-decreasing and y finite, got {x}, {y}")
        check_int("n_samples", self.n_samples, 1)

    @classmethod
    def fit(
        cls,
        scores: object,
        returns: object,
        *,
        min_samples: int = MIN_SAMPLES,
        bin_size: int = BIN_SIZE,
    ) -> ExpectedReturnMap:
        """Isotonic regression (increasing, clipped) of ``returns`` on ``scores``, shape (n,).

        Pairs with a NaN score or return (e.g. the last ``h + 1`` bars of a window) are dropped;
        at least ``min_samples`` must remain, else ``ValueError``. Each return is first replaced
        by the mean of its bin (consecutive score-sorted bins of ``bin_size`` pairs, sizes
        differing by at most one), so every level averages at least ``bin_size`` returns and no
        extreme level rests on a few lucky bars; knots stay at observed scores.
        """
        s, r = np.asarray(scores, dtype=np.float64), np.asarray(returns, dtype=np.float64)
        if s.ndim != 1 or s.shape != r.shape:
            raise ValueError(
                f"scores and returns must be 1-D of one length, got {s.shape}, {r.shape}"
            )
        keep = np.isfinite(s) & np.isfinite(r)
        n = int(keep.sum())
        check_int("bin_size", bin_size, 1)
        if n < max(min_samples, 1):
            raise ValueError(
                f"the expected-return map needs at least {min_samples} samples with a known "
                f"score and return, got {n}"
            )
        order = np.argsort(s[keep], kind="stable")
        xs, ys = s[keep][order], r[keep][order]
        # Each return is replaced by the mean of its bin before the isotonic fit.
        bins = np.array_split(np.arange(n), max(1, n // bin_size))
        ys = np.concatenate([np.full(b.size, ys[b].mean()) for b in bins])
        iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(xs, ys)
        return cls(tuple(map(float, iso.X_thresholds_)), tuple(map(float, iso.y_thresholds_)), n)

    def __call__(self, scores: object) -> np.ndarray:
        """``mu_hat`` in log-return units, same shape as ``scores``; NaN where a score is NaN."""
        s = np.asarray(scores, dtype=np.float64)
        return np.where(np.isnan(s), np.nan, np.interp(s, self.x, self.y))

    def to_dict(self) -> dict:
        """JSON-ready ``{"x": [...], "y": [...], "n_samples": n, "units": "log_return"}``."""
        return {"x": list(self.x), "y": list(self.y), "n_samples": self.n_samples,
                "units": "log_return"}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> ExpectedReturnMap:
        """The map saved by ``to_dict``; a missing key is a ``ValueError`` naming it."""
        missing = [k for k in ("x", "y", "n_samples") if k not in d]
        if missing:
            raise ValueError(f"expected-return map lacks keys {missing}; it has {sorted(d)}")
        return cls(tuple(map(float, d["x"])), tuple(map(float, d["y"])), int(d["n_samples"]))


@dataclass(frozen=True)
class DecisionPolicy:
    """The free choices of the decision rule (module docstring), JSON round-trip via
    ``to_dict`` / ``from_dict``. Units: bps of notional (1 bp = 1e-4), ``horizon`` in bars
    (0 only for FLAT), ``uncertainty_penalty`` in score-standard-deviations."""

    model: str
    horizon: int
    margin_bps: float
    cost_bps: float
    exit_bps: float
    uncertainty_penalty: float = 0.0
    allow_short: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        check_int("horizon", self.horizon, 0 if self.is_flat else 1)
        for name in ("margin_bps", "cost_bps", "uncertainty_penalty"):
            check_range(getattr(self, name), name, 0.0, math.inf)
        check_range(self.exit_bps, "exit_bps", -math.inf, self.cost_bps + self.margin_bps)

    @property
    def is_flat(self) -> bool:
        """True for the FLAT policy (never trades)."""
        return self.model == FLAT_MODEL

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DecisionPolicy:
        """The policy saved by ``to_dict``; missing or unknown keys are a ``ValueError``."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not required <= set(d) <= names:
            raise ValueError(
                f"decision policy keys must include {sorted(required)} and be among "
                f"{sorted(names)}, got {sorted(d)}"
            )
        return cls(**d)


def flat_policy(cost_bps: float, reason: str = NO_EDGE) -> DecisionPolicy:
    """FLAT: always flat; ``reason`` is what the publisher shows next to ``HOLD``."""
    return DecisionPolicy(FLAT_MODEL, 0, 0.0, cost_bps, 0.0, reason=reason)


def expected_gross_bps(
    policy: DecisionPolicy,
    emap: ExpectedReturnMap,
    scores: object,
    uncertainty: object | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(long, short)``: pessimistic expected gross returns over ``policy.horizon`` bars, in
    bps, per bar (n,): ``mu_hat(s - k u)`` for a long and ``-mu_hat(s + k u)`` for a short
    (``k = policy.uncertainty_penalty``; ``uncertainty`` >= 0 or NaN, shape (n,), None = 0).
    NaN where the score is NaN; a NaN uncertainty counts as 0."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {s.shape}")
    u = np.zeros_like(s)
    if uncertainty is not None:
        u = np.nan_to_num(check_range(uncertainty, "uncertainty", 0.0, math.inf, nan_ok=True))
        if u.shape != s.shape:
            raise ValueError(f"uncertainty has shape {u.shape}, expected {s.shape} like scores")
    k = policy.uncertainty_penalty
    return emap(s - k * u) / BPS, -emap(s + k * u) / BPS


def decision_signals(
    policy: DecisionPolicy,
    emap: ExpectedReturnMap | None,
    scores: object,
    *,
    uncertainty: object | None = None,
    size: float | np.ndarray = 1.0,
) -> Signals:
    """The backtest's ``Signals`` of ``policy`` on per-bar ``scores`` (n,) (module docstring).

    Causal: the instruction at bar ``t`` uses rows ``<= t`` only (a prefix of the inputs gives
    the prefix of the signals). ``size``: position size at entries, a fraction of equity,
    scalar or per bar (n,) (e.g. today's confidence-based size). ``emap`` may be None only for
    FLAT. Entries appear only at the bars this rule enters from flat and exits only where it
    leaves, so the backtest follows the same path (no stops to desynchronize it).
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.size
    entry = np.zeros(n, dtype=np.int8)
    exit_long, exit_short = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    if not policy.is_flat:
        if emap is None:
            raise ValueError(f"policy {policy.model!r} needs an expected-return map, got None")
        g_long, g_short = expected_gross_bps(policy, emap, s, uncertainty)
        need = policy.cost_bps + policy.margin_bps
        want = np.where(g_long > need, 1, 0)  # NaN compares False
        if policy.allow_short:
            want = np.where((want == 0) & (g_short > need), -1, want)
        leave = {1: ~(g_long >= policy.exit_bps), -1: ~(g_short >= policy.exit_bps)}
        _walk(want, leave, policy.horizon, entry, {1: exit_long, -1: exit_short})
    sz = np.broadcast_to(np.asarray(size, dtype=np.float64), (n,))
    nan = np.full(n, np.nan)
    return Signals(entry, np.where(entry != 0, sz, 0.0), nan, nan.copy(), exit_long, exit_short)


def _walk(
    want: np.ndarray,
    leave: dict[int, np.ndarray],
    horizon: int,
    entry: np.ndarray,
    exits: dict[int, np.ndarray],
) -> None:
    """Fill ``entry`` (int8 side at entry bars) and ``exits`` (per side, bool at exit bars)
    in place, one trade at a time: enter at the first bar with ``want != 0``, exit at the first
    bar ``>= entry + horizon`` where ``leave[side]``; an exit bar may enter again (a reversal
    to the other side: ``exit_bps <= cost + margin`` rules out re-entering the same side)."""
    starts = np.flatnonzero(want)
    stops = {side: np.flatnonzero(mask) for side, mask in leave.items()}
    t = 0
    while True:
        k = np.searchsorted(starts, t)
        if k == starts.size:
            return
        i = int(starts[k])
        side = int(want[i])
        entry[i] = side
        j = np.searchsorted(stops[side], i + horizon)
        if j == stops[side].size:
            return  # held to the end of the data
        t = int(stops[side][j])
        exits[side][t] = True


@dataclass(frozen=True)
class Decision:
    """What the publisher shows for the latest bar: ``signal`` in {"LONG", "SHORT", "HOLD"},
    ``horizon`` in bars (None for FLAT), ``expected_net_bps``: the better side's pessimistic
    expected return over the horizon minus the round trip (None for FLAT or a NaN score), and
    the ``reason`` in words."""

    signal: str
    horizon: int | None
    expected_net_bps: float | None
    reason: str


def decide_latest(
    policy: DecisionPolicy,
    emap: ExpectedReturnMap | None,
    score: float,
    uncertainty: float | None = None,
) -> Decision:
    """The entry decision from flat at the latest bar, with its reason, e.g. ``LONG`` /
    ``"entry: expected net +12.3 bps over 16 bars"``, ``HOLD`` / ``"expected gain below
    costs: net -20.1 bps over 16 bars (margin 5 bps)"``, or FLAT's ``HOLD`` / ``"no validated
    edge after costs"``. (An open position's hold/exit comes from ``decision_signals`` over
    the recent history, which knows when it was entered.)"""
    if policy.is_flat:
        return Decision("HOLD", None, None, policy.reason or NO_EDGE)
    if emap is None:
        raise ValueError(f"policy {policy.model!r} needs an expected-return map, got None")
    unc = None if uncertainty is None else [uncertainty]
    g_long, g_short = (float(g[0]) for g in expected_gross_bps(policy, emap, [score], unc))
    h = policy.horizon
    if math.isnan(g_long):
        return Decision("HOLD", h, None, "no score for the latest bar")
    short = policy.allow_short and g_short > g_long
    net = (g_short if short else g_long) - policy.cost_bps
    if net > policy.margin_bps:
        side, what = ("SHORT", "entry short") if short else ("LONG", "entry")
        return Decision(side, h, net, f"{what}: expected net {net:+.1f} bps over {h} bars")
    why = f"expected gain below costs: net {net:+.1f} bps over {h} bars"
    return Decision("HOLD", h, net, f"{why} (margin {policy.margin_bps:g} bps)")
