"""Evaluation plots: valid PNG bytes, clear input errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread

from levibot_pipelines.adapters.plots import (
    backtest_plots,
    equity_plot,
    plotted_drawdown,
    reliability_diagram,
    risk_coverage_plot,
)
from levibot_pipelines.core.metrics import risk_coverage
from levibot_pipelines.core.trading.prediction_backtest import SymbolBacktest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    hold = np.exp(np.cumsum(rng.normal(0.0001, 0.012, 2500)))
    _assert_png(equity_plot({"policy": policy, "buy & hold": hold, "flat": np.ones(3000)}))


def test_equity_plot_errors() -> None:
    with pytest.raises(ValueError, match="at least one equity curve"):
        equity_plot({})
    with pytest.raises(ValueError, match="policy must be finite"):
        equity_plot({"policy": np.array([1.0, np.inf])})
    with pytest.raises(ValueError, match="non-empty 1-D"):
        equity_plot({"policy": np.ones((2, 2))})


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
    bt = SymbolBacktest(report={}, equity=equity, timestamps=np.arange(500, dtype=np.int64))
    plots = backtest_plots(bt, "BTCUSDT")
    assert set(plots) == {"equity.png", "drawdown.png"}
    for png in plots.values():
        _assert_png(png)


def test_plots_leave_no_pyplot_figures_open(forecasts: tuple[np.ndarray, np.ndarray]) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    reliability_diagram(*forecasts)
    assert plt.get_fignums() == before
