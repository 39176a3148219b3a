"""Choose a fold's decision policy on its selection windows, never on its test window.

Protocol (per fold; ``core.trading.decision`` defines the rule):

1. For every candidate of a grid fixed in code (each model given x ``horizons`` x
   ``MARGINS_BPS``, with ``UNCERTAINTY_PENALTY``, the exit hysteresis at ``EXIT_FRACTION`` of the
   round trip, and FLAT, always a candidate), fit the ``ExpectedReturnMap`` of the model's score
   on the ``h``-bar forward returns of the ``fit`` window (e.g. the fold's validation window);
2. backtest the candidate with the real cost model (``core.trading.backtest``, fees and
   slippage on both legs) on the later ``score`` window (e.g. the calibration window);
3. a candidate passes when it made at least ``min_trades`` trades with a mean net return per
   trade > 0 and a one-sided t-statistic of the per-trade net returns at least
   ``Phi^-1(1 - alpha / m)`` (Bonferroni over the ``m`` non-FLAT candidates: the bar rises with
   the number of candidates tried). The passing candidate with the highest compounded net return
   wins; when none passes, FLAT wins (FLAT's net is 0 and a pass needs a positive one, so a tie
   goes to FLAT);
4. the winner's map is refitted on both windows' pairs.

Forward returns are computed inside each window from its own opens (the last ``h + 1`` bars of
a window have none), so nothing after the ``score`` window is read: ``select_decision`` takes
the two selection windows only, and the test window exists only for ``Selection.signals``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import polars as pl

from levibot_pipelines.core.data.targets import forward_log_returns
from levibot_pipelines.core.trading.backtest import BacktestConfig, CostModel, Signals, run_backtest
from levibot_pipelines.core.trading.decision import (
    MIN_SAMPLES,
    DecisionPolicy,
    ExpectedReturnMap,
    decision_signals,
    flat_policy,
    round_trip_cost_bps,
)
from levibot_pipelines.core.trading.performance import probabilistic_sharpe_ratio

HORIZONS = (1, 4, 16, 48)  # bars; the default of the configured LEVIBOT_HORIZONS
MARGINS_BPS = (0.0, 5.0, 10.0)
UNCERTAINTY_PENALTY = 1.0  # score standard deviations
EXIT_FRACTION = 0.5  # exit below half the round-trip cost
MIN_TRADES = 20
ALPHA = 0.05


@dataclass(frozen=True)
class Window:
    """Consecutive bars of one symbol: ``timestamps`` (int ms UTC), ``open``/``high``/``low``/
    ``close`` (n,), ``scores`` per model name (n,) (higher = up; NaN where unknown) and,
    optionally, ``uncertainty`` per model (n,) in score units (>= 0 or NaN)."""

    timestamps: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    scores: Mapping[str, np.ndarray]
    uncertainty: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        arrays = {k: getattr(self, k) for k in ("open", "high", "low", "close")}
        arrays |= {f"scores[{k!r}]": v for k, v in self.scores.items()}
        arrays |= {f"uncertainty[{k!r}]": v for k, v in self.uncertainty.items()}
        bad = {k: len(v) for k, v in arrays.items() if len(v) != n}
        if bad:
            raise ValueError(f"every array must have {n} rows like timestamps, got {bad}")
        if not self.scores:
            raise ValueError("scores must name at least one model, got none")
        extra = sorted(set(self.uncertainty) - set(self.scores))
        if extra:
            raise ValueError(f"uncertainty names models without scores: {extra}")

    def __len__(self) -> int:
        return len(self.timestamps)

    def take(self, rows: np.ndarray | slice) -> Window:
        """The window of the given rows (an index array or a slice)."""
        pick = {k: np.asarray(getattr(self, k))[rows] for k in ("timestamps", "open", "high")}
        pick |= {k: np.asarray(getattr(self, k))[rows] for k in ("low", "close")}
        scores = {k: np.asarray(v)[rows] for k, v in self.scores.items()}
        unc = {k: np.asarray(v)[rows] for k, v in self.uncertainty.items()}
        return Window(**pick, scores=scores, uncertainty=unc)


@dataclass(frozen=True)
class Selection:
    """The chosen ``policy``, its ``emap`` (None for FLAT), ``n_candidates`` (FLAT included:
    the trial count of the deflated Sharpe ratio) and ``table``, one row per candidate with its
    score-window result (see ``select_decision``)."""

    policy: DecisionPolicy
    emap: ExpectedReturnMap | None
    n_candidates: int
    table: pl.DataFrame

    def to_dict(self) -> dict:
        """JSON-ready ``{"policy": ..., "map": ... or None, "n_candidates": m}`` (for the
        champion); ``decision_from_dict`` reads it back."""
        emap = None if self.emap is None else self.emap.to_dict()
        return {"policy": self.policy.to_dict(), "map": emap, "n_candidates": self.n_candidates}

    def signals(self, window: Window, size: float | np.ndarray = 1.0) -> Signals:
        """The chosen policy's ``Signals`` on ``window`` (e.g. the fold's test window)."""
        s = window.scores.get(self.policy.model, np.full(len(window), np.nan))
        unc = window.uncertainty.get(self.policy.model)
        return decision_signals(self.policy, self.emap, s, uncertainty=unc, size=size)


def decision_from_dict(d: Mapping) -> tuple[DecisionPolicy, ExpectedReturnMap | None]:
    """``(policy, map)`` from ``Selection.to_dict()`` (e.g. read back from the champion)."""
    if "policy" not in d:
        raise ValueError(f"a stored decision needs a 'policy' key, got {sorted(d)}")
    emap = d.get("map")
    return DecisionPolicy.from_dict(dict(d["policy"])), (
        None if emap is None else ExpectedReturnMap.from_dict(emap)
    )


def select_decision(
    fit: Window,
    score: Window,
    costs: CostModel,
    *,
    horizons: Sequence[int] = HORIZONS,
    allow_short: bool = False,
    min_trades: int = MIN_TRADES,
    alpha: float = ALPHA,
    min_samples: int = MIN_SAMPLES,
) -> Selection:
    """Choose the decision policy of one fold from ``fit`` then ``score`` (module docstring).

    ``fit`` and ``score``: the fold's selection windows in time order, both before its test
    window, with the same model names; ``costs``: the symbol's real cost model. The table's
    columns: ``model``, ``horizon``, ``margin_bps``, ``status`` (``"scored"``, ``"too few
    samples"`` or ``"flat"``), ``n_trades``, ``mean_net_bps`` (per trade, after costs),
    ``t_stat``, ``total_net_return`` (compounded, size 1), ``psr`` (per-bar returns vs 0),
    ``passed`` and ``chosen``.
    """
    if set(fit.scores) != set(score.scores):
        raise ValueError(f"fit and score windows name different models: {sorted(fit.scores)} vs "
                         f"{sorted(score.scores)}")  # fmt: skip
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cost = round_trip_cost_bps(costs)
    cfg = BacktestConfig(costs)
    rows, policies = [], []
    for model in fit.scores:
        for h in dict.fromkeys(horizons):
            emap = _try_fit(fit.scores[model], forward_log_returns(fit.open, h), min_samples)
            for m in MARGINS_BPS:
                p = DecisionPolicy(model, h, m, cost, EXIT_FRACTION * cost, UNCERTAINTY_PENALTY,
                                   allow_short)  # fmt: skip
                rows.append(_score(p, emap, score, cfg))
                policies.append(p)
    t_crit = NormalDist().inv_cdf(1.0 - alpha / max(len(rows), 1))
    for row in rows:
        row["passed"] = bool(
            row["n_trades"] >= min_trades and row["mean_net_bps"] > 0 and row["t_stat"] >= t_crit
        )
    passing = [i for i, row in enumerate(rows) if row["passed"]]
    best = max(passing, key=lambda i: rows[i]["total_net_return"], default=None)
    policies.append(flat_policy(cost))
    rows.append(_row(policies[-1], "flat") | {"passed": False})
    chosen = len(rows) - 1 if best is None else best
    for i, row in enumerate(rows):
        row["chosen"] = i == chosen
    table = pl.DataFrame(rows)
    p = policies[chosen]
    if best is None:
        return Selection(p, None, len(rows), table)
    r_fit, r_score = (forward_log_returns(w.open, p.horizon) for w in (fit, score))
    s = np.r_[fit.scores[p.model], score.scores[p.model]]
    emap = ExpectedReturnMap.fit(s, np.r_[r_fit, r_score], min_samples=min_samples)
    return Selection(p, emap, len(rows), table)


def _try_fit(s: np.ndarray, r: np.ndarray, min_samples: int) -> ExpectedReturnMap | None:
    """The map of ``r`` on ``s``, or None when too few pairs are known."""
    try:
        return ExpectedReturnMap.fit(s, r, min_samples=min_samples)
    except ValueError:
        return None


def _row(policy: DecisionPolicy, status: str, **stats: float) -> dict:
    """One table row (zeros for a candidate that did not trade)."""
    return {
        "model": policy.model,
        "horizon": policy.horizon,
        "margin_bps": policy.margin_bps,
        "status": status,
        "n_trades": int(stats.get("n_trades", 0)),
        "mean_net_bps": float(stats.get("mean_net_bps", 0.0)),
        "t_stat": float(stats.get("t_stat", 0.0)),
        "total_net_return": float(stats.get("total_net_return", 0.0)),
        "psr": float(stats.get("psr", 0.5)),
    }


def _score(
    policy: DecisionPolicy, emap: ExpectedReturnMap | None, w: Window, cfg: BacktestConfig
) -> dict:
    """Backtest ``policy`` on window ``w`` and summarize its trades (``select_decision``). A
    trade still open at the end is charged its missing exit leg."""
    if emap is None:
        return _row(policy, "too few samples")
    sig = decision_signals(
        policy, emap, w.scores[policy.model], uncertainty=w.uncertainty.get(policy.model)
    )
    res = run_backtest(w.timestamps, w.open, w.high, w.low, w.close, sig, cfg)
    trades = res.trades
    leg = (cfg.costs.fee_bps + cfg.costs.slippage_bps) * 1e-4
    open_end = trades.get_column("exit_reason").to_numpy() == "end"
    net = trades.get_column("net_return").to_numpy() - np.where(
        open_end, leg * trades.get_column("size").to_numpy(), 0.0
    )
    n = net.size
    sd = float(net.std(ddof=1)) if n >= 2 else 0.0
    return _row(
        policy,
        "scored",
        n_trades=n,
        mean_net_bps=float(net.mean()) * 1e4 if n else 0.0,
        t_stat=float(net.mean()) / sd * math.sqrt(n) if sd > 0 else 0.0,
        total_net_return=float(np.prod(1.0 + net) - 1.0),
        psr=probabilistic_sharpe_ratio(res.returns),
    )
