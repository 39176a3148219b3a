"""Evaluation plots rendered to PNG bytes, for MLflow artifacts and Dagster metadata.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so
no GUI backend is selected, pyplot's global figure registry is never used, and nothing leaks
between calls or threads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from levibot_pipelines.core.checks import check_array, check_same_length
from levibot_pipelines.core.metrics import reliability_bins
from levibot_pipelines.core.trading.performance import drawdown

if TYPE_CHECKING:
    from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest

log = logging.getLogger(__name__)

DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def reliability_diagram(y: object, p: object, n_bins: int = 15, title: str = "") -> bytes:
    """Reliability diagram of ``p = P(up)`` against labels ``y`` as PNG bytes.

    Top: fraction of positives per bin (bars on ``n_bins`` uniform bins, markers at each bin's
    mean forecast) against the diagonal of perfect calibration; ECE (15 uniform bins by default,
    L1, see ``core.metrics.reliability_bins``) in the title. Bottom: histogram of ``p``.
    """
    mean_p, frac_pos, count, ece = reliability_bins(y, p, n_bins)
    p_arr = np.asarray(p, dtype=np.float64)
    filled = count > 0
    width = 1.0 / n_bins
    fig = Figure(figsize=(6.0, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    # Bars sit on their bins; the p == 1 bin (index n_bins) shows only as a marker.
    in_grid = filled[:n_bins]
    centers = (np.arange(n_bins) + 0.5) * width
    top.bar(
        centers[in_grid],
        frac_pos[:n_bins][in_grid],
        width=width * 0.9,
        color="tab:blue",
        alpha=0.7,
        label="fraction of positives",
    )
    top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    top.plot(mean_p[filled], frac_pos[filled], marker="o", color="tab:red", label="bin mean")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(0.0, 1.0)
    top.set_ylabel("fraction of positives")
    top.legend(loc="upper left")
    heading = f"ECE = {ece:.4f} ({n_bins} bins, n = {p_arr.size})"
    top.set_title(f"{title}\n{heading}" if title else heading)
    bottom.hist(p_arr, bins=np.linspace(0.0, 1.0, n_bins + 1), color="tab:gray")
    bottom.set_xlabel("forecast probability P(up)")
    bottom.set_ylabel("count")
    fig.tight_layout()
    return _png(fig)


def risk_coverage_plot(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = ""
) -> bytes:
    """Risk-coverage curves as PNG bytes: one line per model, ``{name: (coverage, risk)}``.

    ``coverage`` and ``risk`` are equal-length 1-D arrays (as from ``core.metrics.risk_coverage``),
    coverage in (0, 1] on x and risk (error rate of the most confident fraction) on y.
    """
    if not curves:
        raise ValueError("curves must name at least one model")
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curve {name!r} must be (coverage, risk), got {len(pair)} arrays")
        coverage = check_array(pair[0], f"{name} coverage")
        risk = check_array(pair[1], f"{name} risk")
        check_same_length(**{f"{name} coverage": coverage, f"{name} risk": risk})
        ax.plot(coverage, risk, label=f"{name} (full-coverage risk {risk[-1]:.3f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("coverage")
    ax.set_ylabel("risk (error rate)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or "risk-coverage")
    fig.tight_layout()
    return _png(fig)


def equity_plot(curves: Mapping[str, np.ndarray], title: str = "", ylabel: str = "equity") -> bytes:
    """Equity curves as PNG bytes: one line per ``{name: equity}``, bar index on x.

    Each curve is a 1-D array (curves may differ in length), e.g. cumulative net equity of a
    policy backtest next to buy-and-hold.
    """
    if not curves:
        raise ValueError("curves must name at least one equity curve")
    fig = Figure(figsize=(8.0, 4.5))
    ax = fig.subplots()
    for name, values in curves.items():
        equity = check_array(values, name)
        ax.plot(np.arange(equity.size), equity, label=name)
    ax.set_xlabel("bar")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or "equity")
    fig.tight_layout()
    return _png(fig)


def plotted_drawdown(equity: object) -> np.ndarray:
    """Drawdown of a backtest's equity curve for plotting, shape (n,): ``performance.drawdown``
    measured from the starting capital 1.0 (as ``backtest_metrics``' ``max_drawdown``), with a
    ruined curve (equity <= 0, even at its first point) clipped to 0, i.e. a drawdown of 1, so
    plotting it never fails a report. Non-finite equity still raises ``ValueError``."""
    eq = np.asarray(equity, dtype=np.float64)
    return drawdown(np.r_[1.0, np.maximum(eq, 0.0)])[1:]


def backtest_plots(bt: SymbolBacktest, symbol: str) -> dict[str, bytes]:
    """``equity.png`` and ``drawdown.png``: each policy (net of costs) and buy-and-hold."""
    curves = {f"policy ({m})": bt.equity[m] for m in ("ensemble", "lgbm", "deep")}
    curves["buy and hold"] = bt.equity["buy_and_hold"]
    return {
        "equity.png": equity_plot(curves, title=f"{symbol} walk-forward test, net of costs"),
        "drawdown.png": equity_plot(
            {k: -plotted_drawdown(v) for k, v in curves.items()},
            title=f"{symbol} drawdown (negative = below the running peak)",
            ylabel="drawdown",
        ),
    }
