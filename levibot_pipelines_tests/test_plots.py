"""Evaluation plots: valid PNG bytes, clear input errors, UTC dates on time axes, reliability
diagrams zoomed to the forecasts with equal-count bins."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import matplotlib.dates as mdates
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from levibot_pipelines.adapters.plots import (
    backtest_plots,
    equity_figure,
    equity_plot,
    plotted_drawdown,
    quantile_bins,
    reliability_diagram,
    reliability_figure,
    risk_coverage_plot,
    zoom_range,
)
from levibot_pipelines.core.metrics import risk_coverage
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
TF = 900_000  # 15 minutes


def bar_times(n: int) -> np.ndarray:
    return T0 + TF * np.arange(n, dtype=np.int64)


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def forecasts() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 1.0, 2000)
    y = (rng.uniform(0.0, 1.0, 2000) < p).astype(np.float64)
    return y, p


def _assert_png(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 5_000
    image = imread(io.BytesIO(png), format="png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 0.0, "the image is not blank"
    return image


def test_reliability_diagram_png(forecasts: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = forecasts
    _assert_png(reliability_diagram(y, p, title="deep BTCUSDT"))


def test_reliability_diagram_handles_edges_and_tiny_input() -> None:
    _assert_png(reliability_diagram([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.5]))


def test_reliability_diagram_errors() -> None:
    with pytest.raises(ValueError, match="length mismatch: y has 3, p has 2"):
        reliability_diagram([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="p must be probabilities"):
        reliability_diagram([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="y must contain only 0 and 1"):
        reliability_diagram([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="p must be finite"):
        reliability_diagram([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        reliability_diagram([], [])
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        reliability_diagram([0, 1], [0.1, 0.2], n_bins=0)


def test_risk_coverage_plot_png(forecasts: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = forecasts
    rng = np.random.default_rng(1)
    curves = {
        "deep": risk_coverage(y, p),
        "lgbm": risk_coverage(y, np.clip(p + rng.normal(0.0, 0.2, p.size), 0.0, 1.0)),
    }
    _assert_png(risk_coverage_plot(curves, title="BTCUSDT test window"))


def test_risk_coverage_plot_errors() -> None:
    with pytest.raises(ValueError, match="length mismatch: deep coverage has 3, deep risk has 2"):
        risk_coverage_plot({"deep": (np.array([0.3, 0.6, 1.0]), np.array([0.1, 0.2]))})
    with pytest.raises(ValueError, match="at least one model"):
        risk_coverage_plot({})
    with pytest.raises(ValueError, match="must be \\(coverage, risk\\)"):
        risk_coverage_plot({"deep": (np.array([1.0]),)})  # type: ignore[dict-item]


def test_equity_plot_png() -> None:
    rng = np.random.default_rng(2)
    policy = np.exp(np.cumsum(rng.normal(0.0002, 0.01, 3000)))
    hold = np.exp(np.cumsum(rng.normal(0.0001, 0.012, 3000)))
    curves = {"policy": policy, "buy & hold": hold, "flat": np.ones(3000)}
    _assert_png(equity_plot(curves, bar_times(3000)))


def test_equity_plot_x_axis_is_the_bar_times_in_utc_dates() -> None:
    """3000 15m bars from 2026-01-01 00:00 UTC: the last opens 2999 x 15 min = 31 d 5 h 45 min
    later, on 2026-02-01 05:45 UTC. The x-axis is limited to exactly those two bar times and
    its ticks are dates inside them."""
    fig = equity_figure({"policy": np.linspace(1.0, 1.2, 3000)}, bar_times(3000), title="BTC")
    ax = fig.axes[0]
    assert isinstance(ax.xaxis.get_converter(), type(mdates.units.registry[np.datetime64]))
    assert isinstance(ax.xaxis.get_major_formatter(), mdates.ConciseDateFormatter)
    first, last = (mdates.num2date(x, tz=UTC) for x in ax.get_xlim())
    assert first == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert last == datetime(2026, 2, 1, 5, 45, tzinfo=UTC)
    FigureCanvasAgg(fig).draw()
    ticks = [mdates.num2date(t, tz=UTC) for t in ax.get_xticks()]
    inside = [t for t in ticks if first <= t <= last]
    assert len(inside) >= 3 and all(t.hour == 0 and t.minute == 0 for t in inside)  # whole days
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "Jan" in labels and ax.get_xlabel() == "bar open time (UTC)"
    line = ax.get_lines()[0].get_xdata()
    assert line[0] == np.datetime64("2026-01-01T00:00") and line.size == 3000


def test_equity_plot_errors() -> None:
    times = bar_times(2)
    with pytest.raises(ValueError, match="at least one equity curve"):
        equity_plot({}, times)
    with pytest.raises(ValueError, match="policy must be finite"):
        equity_plot({"policy": np.array([1.0, np.inf])}, times)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        equity_plot({"policy": np.ones((2, 2))}, times)
    with pytest.raises(ValueError, match=r"share the bar times, got lengths \{'a': 2, 'b': 3\}"):
        equity_plot({"a": np.ones(2), "b": np.ones(3)}, times)
    with pytest.raises(ValueError, match="times_ms has 2 bar times for curves of 3 points"):
        equity_plot({"a": np.ones(3)}, times)
    with pytest.raises(ValueError, match="strictly increasing"):
        equity_plot({"a": np.ones(2)}, times[::-1])


def test_plotted_drawdown_is_measured_from_the_starting_capital_and_clips_ruin() -> None:
    np.testing.assert_allclose(plotted_drawdown([1.0, 1.2, 0.9, 1.5]), [0.0, 0.0, 0.25, 0.0])
    # A ruined curve, even one that is <= 0 at its first point, is a drawdown of 1 there.
    np.testing.assert_allclose(plotted_drawdown([-0.5, 0.0, 0.5]), [1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="equity must be finite"):
        plotted_drawdown([1.0, np.nan])


def test_backtest_plots_draw_a_ruined_curve() -> None:
    rng = np.random.default_rng(3)
    healthy = np.exp(np.cumsum(rng.normal(0.0, 0.01, 500)))
    ruined = np.r_[-0.01, np.linspace(-0.5, 0.2, 499)]  # <= 0 from its first point
    equity = {"ensemble": ruined, "lgbm": healthy, "deep": healthy, "buy_and_hold": healthy}
    bt = SymbolBacktest(report={}, equity=equity, timestamps=bar_times(500))
    plots = backtest_plots(bt, "BTCUSDT")
    assert set(plots) == {"equity.png", "drawdown.png"}
    for png in plots.values():
        _assert_png(png)


def test_backtest_plots_are_drawn_over_the_backtest_bar_times() -> None:
    equity = {m: np.ones(500) for m in ("ensemble", "lgbm", "deep", "buy_and_hold")}
    bt = SymbolBacktest(report={}, equity=equity, timestamps=bar_times(499))
    with pytest.raises(ValueError, match="times_ms has 499 bar times for curves of 500 points"):
        backtest_plots(bt, "BTCUSDT")


def test_plots_leave_no_pyplot_figures_open(forecasts: tuple[np.ndarray, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    reliability_diagram(*forecasts)
    assert plt.get_fignums() == before


def test_quantile_bins_hold_equal_counts_in_order_of_p() -> None:
    p = [0.5, 0.1, 0.4, 0.2, 0.6, 0.3]
    y = [1, 0, 0, 1, 1, 1]  # sorted by p: y = 0, 1, 1, 0, 1, 1
    mean_p, frac_pos, count, edges = quantile_bins(y, p, n_bins=3)
    np.testing.assert_allclose(mean_p, [0.15, 0.35, 0.55])
    np.testing.assert_allclose(frac_pos, [0.5, 0.5, 1.0])
    np.testing.assert_array_equal(count, [2, 2, 2])
    np.testing.assert_allclose(edges, [0.1, 0.2, 0.4, 0.6])
    # More bins than forecasts: one bin per forecast; 7 into 3: sizes 3, 2, 2.
    assert quantile_bins([0, 1], [0.3, 0.7], n_bins=10)[2].tolist() == [1.0, 1.0]
    assert quantile_bins([0] * 7, np.linspace(0.1, 0.7, 7), 3)[2].tolist() == [3.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="n_bins must be a positive integer, got 0"):
        quantile_bins([0, 1], [0.1, 0.2], n_bins=0)


def test_zoom_range_is_inside_the_forecasts() -> None:
    grid = np.linspace(0.40, 0.60, 2001)
    assert zoom_range(grid) == pytest.approx((0.40, 0.60))  # padding never passes min/max
    lo, hi = zoom_range(np.r_[grid, 0.95])  # one outlier does not stretch the axis
    assert lo == pytest.approx(0.40) and 0.60 < hi < 0.62
    assert zoom_range(np.full(10, 0.5)) == pytest.approx((0.49, 0.51))  # the minimum width
    assert zoom_range(np.zeros(10)) == pytest.approx((0.0, 0.02))  # kept inside [0, 1]


def test_reliability_diagram_zooms_to_forecasts_near_one_half() -> None:
    """Forecasts like the real ensemble's (98% within [0.43, 0.59]): the x-axis spans the
    forecasts, not 0..1, and shows the diagonal, 10 equal-count bins and the uniform bins."""
    rng = np.random.default_rng(4)
    p = np.clip(rng.normal(0.51, 0.034, 5000), 0.0, 1.0)
    y = (rng.uniform(size=p.size) < p).astype(np.float64)
    assert np.mean((p >= 0.43) & (p <= 0.59)) > 0.97
    fig = reliability_figure(y, p, title="BTCUSDT ensemble")
    top, bottom = fig.axes
    lo, hi = top.get_xlim()
    assert p.min() <= lo < 0.44 and 0.58 < hi <= p.max() and hi - lo < 0.25
    assert bottom.get_xlim() == (lo, hi)
    ylo, yhi = top.get_ylim()
    assert 0.3 < ylo < yhi < 0.7
    diagonal = [ln for ln in top.get_lines() if ln.get_label() == "perfect calibration"]
    assert len(diagonal) == 1
    np.testing.assert_allclose(diagonal[0].get_xdata(), diagonal[0].get_ydata())
    labels = top.get_legend_handles_labels()[1]
    assert "10 equal-count bins (95% interval)" in labels
    assert "15 uniform bins on [0, 1] (ECE)" in labels
    points = top.containers[0].lines[0]  # the equal-count bins' markers
    np.testing.assert_allclose(points.get_xdata(), quantile_bins(y, p, 10)[0])
    assert "ECE = " in top.get_title() and "(10 equal-count)" in top.get_title()
