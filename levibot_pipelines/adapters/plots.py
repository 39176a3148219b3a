"""Evaluation plots rendered to PNG bytes, for MLflow artifacts, the report files and Dagster
metadata. Plots over time take the bars' open times (ms UTC) and draw UTC dates; reliability
diagrams are zoomed to the forecasts' range. Each ``*_figure`` builder returns the figure before
it is rendered (what the tests inspect); its ``*_plot``/``*_diagram`` twin returns the PNG.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so
no GUI backend is selected, pyplot's global figure registry is never used, and nothing leaks
between calls or threads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from levibot_pipelines.core.checks import (
    check_array,
    check_labels,
    check_probabilities,
    check_same_length,
)
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


def quantile_bins(y: object, p: object, n_bins: int = 10) -> tuple[np.ndarray, ...]:
    """Equal-count calibration bins: the ``n`` forecasts sorted by ``p`` and split into
    ``min(n_bins, n)`` consecutive groups whose sizes differ by at most one (ties may share a
    boundary). Returns ``(mean_p, frac_pos, count, edges)``: per bin the mean forecast, the
    fraction of positives and the size, shape (k,), and the ``p`` at each boundary, shape
    (k + 1,) (the first and last are ``min(p)`` and ``max(p)``)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y_arr, p_arr = check_labels(y), check_probabilities(p)
    check_same_length(y=y_arr, p=p_arr)
    order = np.argsort(p_arr, kind="stable")
    groups = np.array_split(order, min(n_bins, p_arr.size))
    mean_p = np.array([p_arr[g].mean() for g in groups])
    frac_pos = np.array([y_arr[g].mean() for g in groups])
    count = np.array([g.size for g in groups], dtype=np.float64)
    edges = np.array([p_arr[groups[0][0]], *(p_arr[g[-1]] for g in groups)])
    return mean_p, frac_pos, count, edges


def zoom_range(p: np.ndarray, tail: float = 0.005, min_width: float = 0.02) -> tuple[float, float]:
    """The range of ``p`` a reliability diagram shows: the ``tail`` (0.5%) and ``1 - tail``
    quantiles widened by 5% of their span on each side, but never past ``min(p)``/``max(p)``;
    forecasts all within ``min_width`` (0.02) of each other get that width around their
    middle, inside [0, 1]. Real forecasts near 0.5 (98% in [0.43, 0.59]) fill the axis."""
    lo, hi = (float(q) for q in np.quantile(p, [tail, 1.0 - tail]))
    pad = 0.05 * (hi - lo)
    lo, hi = max(float(p.min()), lo - pad), min(float(p.max()), hi + pad)
    if hi - lo < min_width:
        mid = min(max((lo + hi) / 2.0, min_width / 2.0), 1.0 - min_width / 2.0)
        lo, hi = mid - min_width / 2.0, mid + min_width / 2.0
    return lo, hi


def reliability_figure(
    y: object, p: object, n_bins: int = 15, n_quantile_bins: int = 10, title: str = ""
) -> Figure:
    """The reliability diagram of ``p = P(up)`` against labels ``y`` (see
    ``reliability_diagram``), as a figure not yet rendered."""
    mean_p, frac_pos, count, ece = reliability_bins(y, p, n_bins)
    q_mean, q_frac, q_count, q_edges = quantile_bins(y, p, n_quantile_bins)
    p_arr = np.asarray(p, dtype=np.float64)
    q_ece = float(np.sum(q_count * np.abs(q_frac - q_mean)) / p_arr.size)
    lo, hi = zoom_range(p_arr)
    fig = Figure(figsize=(6.5, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([lo, hi], [lo, hi], linestyle="--", color="gray", label="perfect calibration")
    half_width = 1.96 * np.sqrt(np.clip(q_frac * (1.0 - q_frac), 0.0, None) / q_count)
    label = f"{q_mean.size} equal-count bins (95% interval)"
    top.errorbar(
        q_mean, q_frac, yerr=half_width, marker="o", color="tab:red", capsize=3, label=label
    )
    filled = count > 0
    label = f"{n_bins} uniform bins on [0, 1] (ECE)"
    top.plot(mean_p[filled], frac_pos[filled], "s", color="tab:blue", label=label)
    ys = np.r_[lo, hi, q_frac - half_width, q_frac + half_width]
    margin = 0.05 * max(float(ys.max() - ys.min()), 0.02)
    top.set_xlim(lo, hi)
    top.set_ylim(max(0.0, float(ys.min()) - margin), min(1.0, float(ys.max()) + margin))
    top.set_ylabel("fraction of positives")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    heading = f"ECE = {ece:.4f} ({n_bins} uniform bins), {q_ece:.4f} ({q_mean.size} equal-count)"
    heading += f", n = {p_arr.size}"
    top.set_title(f"{title}\n{heading}" if title else heading, fontsize="medium")
    _forecast_histogram(bottom, p_arr, lo, hi, q_edges[1:-1])
    fig.tight_layout()
    return fig


def _forecast_histogram(ax: Axes, p: np.ndarray, lo: float, hi: float, edges: np.ndarray) -> None:
    """Histogram of the forecasts ``p`` on ``[lo, hi]`` (40 bins) with the equal-count bin
    ``edges``; the x label says how many forecasts lie outside the zoom."""
    ax.hist(p, bins=np.linspace(lo, hi, 41), color="tab:gray")
    for edge in edges:
        ax.axvline(edge, color="tab:red", linewidth=0.6, alpha=0.6)
    outside = int(np.sum((p < lo) | (p > hi)))
    ax.set_xlabel(f"forecast probability P(up), zoomed to [{lo:.3f}, {hi:.3f}] ({outside} outside)")
    ax.set_ylabel("count")


def reliability_diagram(
    y: object, p: object, n_bins: int = 15, n_quantile_bins: int = 10, title: str = ""
) -> bytes:
    """Reliability diagram of ``p = P(up)`` against labels ``y`` (shape (n,) each) as PNG bytes.

    The axes are zoomed to the forecasts' range (``zoom_range``: forecasts near 0.5 would be a
    dot on a 0..1 axis). Top: the fraction of positives against the mean forecast in
    ``n_quantile_bins`` equal-count bins (default 10, ``quantile_bins``) with a 95% normal
    interval, and in the ``n_bins`` uniform bins on [0, 1] of the ECE (default 15, L1, see
    ``core.metrics.reliability_bins``), against the diagonal of perfect calibration; both ECEs in
    the title. Bottom: histogram of ``p`` with the equal-count bin edges.
    """
    return _png(reliability_figure(y, p, n_bins, n_quantile_bins, title))


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


def bar_times(times_ms: object, n: int | None = None) -> np.ndarray:
    """Bar open times in ms UTC, shape (n,), as ``datetime64[ms]`` (which matplotlib draws as
    dates, in UTC); ``ValueError`` when they are not finite, not increasing, or not ``n`` long."""
    ms = check_array(times_ms, "times_ms")
    if n is not None and ms.size != n:
        raise ValueError(f"times_ms has {ms.size} bar times for curves of {n} points")
    if ms.size > 1 and not bool(np.all(np.diff(ms) > 0)):
        raise ValueError("times_ms must be strictly increasing bar open times (ms UTC)")
    return ms.astype(np.int64).astype("datetime64[ms]")


def date_axis(ax: Axes, times: np.ndarray) -> None:
    """Concise UTC date ticks on ``ax``'s x-axis, limited to the first and last of ``times``."""
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    if times.size > 1:
        ax.set_xlim(times[0], times[-1])
    ax.set_xlabel("bar open time (UTC)")


def equity_figure(
    curves: Mapping[str, np.ndarray], times_ms: object, title: str = "", ylabel: str = "equity"
) -> Figure:
    """Curves over time, one line per ``{name: values}``, as a figure not yet rendered; see
    ``equity_plot``."""
    if not curves:
        raise ValueError("curves must name at least one equity curve")
    values = {name: check_array(v, name) for name, v in curves.items()}
    lengths = {name: v.size for name, v in values.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"curves must share the bar times, got lengths {lengths}")
    times = bar_times(times_ms, next(iter(lengths.values())))
    fig = Figure(figsize=(8.0, 4.5))
    ax = fig.subplots()
    for name, v in values.items():
        ax.plot(times, v, label=name)
    date_axis(ax, times)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title or "equity")
    fig.tight_layout()
    return fig


def equity_plot(
    curves: Mapping[str, np.ndarray], times_ms: object, title: str = "", ylabel: str = "equity"
) -> bytes:
    """Equity curves as PNG bytes: one line per ``{name: equity}`` over the bar open times
    ``times_ms`` (ms UTC, shape (n,), increasing) drawn as UTC dates. Every curve is a 1-D
    array of ``n`` points, e.g. cumulative net equity of a policy backtest next to
    buy-and-hold on the same test bars."""
    return _png(equity_figure(curves, times_ms, title, ylabel))


def plotted_drawdown(equity: object) -> np.ndarray:
    """Drawdown of a backtest's equity curve for plotting, shape (n,): ``performance.drawdown``
    measured from the starting capital 1.0 (as ``backtest_metrics``' ``max_drawdown``), with a
    ruined curve (equity <= 0, even at its first point) clipped to 0, i.e. a drawdown of 1, so
    plotting it never fails a report. Non-finite equity still raises ``ValueError``."""
    eq = np.asarray(equity, dtype=np.float64)
    return drawdown(np.r_[1.0, np.maximum(eq, 0.0)])[1:]


def backtest_plots(bt: SymbolBacktest, symbol: str) -> dict[str, bytes]:
    """``equity.png`` and ``drawdown.png``: each policy (net of costs) and buy-and-hold over
    the test window's bar times (``bt.timestamps``, UTC dates on the x-axis)."""
    curves = {f"policy ({m})": bt.equity[m] for m in ("ensemble", "lgbm", "deep")}
    curves["buy and hold"] = bt.equity["buy_and_hold"]
    return {
        "equity.png": equity_plot(
            curves, bt.timestamps, title=f"{symbol} walk-forward test, net of costs"
        ),
        "drawdown.png": equity_plot(
            {k: -plotted_drawdown(v) for k, v in curves.items()},
            bt.timestamps,
            title=f"{symbol} drawdown (negative = below the running peak)",
            ylabel="drawdown",
        ),
    }


def live_auc_figure(
    times_ms: object,
    curves: Mapping[str, np.ndarray],
    walk_forward: Mapping[str, float | None] | None = None,
    title: str = "",
) -> Figure:
    """Rolling live AUC per model (``{model: auc}``, each shape (n,)) over the bar open times
    ``times_ms`` (ms UTC, increasing), each model's walk-forward test AUC (``walk_forward``,
    None where unknown) a dashed line of its colour, and 0.5 (no skill) dotted; see
    ``live_auc_plot``."""
    fig = equity_figure(curves, times_ms, title or "rolling live AUC", ylabel="rolling live AUC")
    ax = fig.axes[0]
    for line in list(ax.get_lines()):
        ref = (walk_forward or {}).get(str(line.get_label()))
        if ref is not None:
            ax.axhline(ref, color=line.get_color(), linestyle="--", linewidth=1.0)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1.0)
    return fig


def live_auc_plot(
    times_ms: object,
    curves: Mapping[str, np.ndarray],
    walk_forward: Mapping[str, float | None] | None = None,
    title: str = "",
) -> bytes:
    """``live_auc_figure`` as PNG bytes."""
    return _png(live_auc_figure(times_ms, curves, walk_forward, title))
