"""Plots and tables in Dagster metadata: what the UI shows inline (Markdown under its 1000
character limit: images served by the MLflow UI, a short backtest table) and what sits behind
"[Show Markdown]" (the embedded PNG)."""

import dagster as dg
import pytest

from levibot_pipelines.defs.common import (
    MARKDOWN_INLINE_LIMIT,
    backtest_summary_md,
    image_md,
    mlflow_images_md,
)
from levibot_pipelines.usecases.report import PLOT_ARTIFACTS

RUN_ID = "0123456789abcdef0123456789abcdef"
RUN_URL = f"http://127.0.0.1:5000/#/experiments/1/runs/{RUN_ID}"


def test_report_plots_are_inline_images_served_by_the_mlflow_ui():
    md = mlflow_images_md(RUN_URL, PLOT_ARTIFACTS)
    assert isinstance(md, dg.MarkdownMetadataValue)
    assert len(md.value) < MARKDOWN_INLINE_LIMIT
    assert md.value.split("\n\n") == [
        f"![{name}](http://127.0.0.1:5000/get-artifact?path=plots/{name}.png&run_uuid={RUN_ID})"
        for name in ("reliability_ensemble", "risk_coverage", "equity", "drawdown")
    ]


def test_the_mlflow_base_is_redacted_and_a_bad_run_url_is_an_error():
    url = f"https://user:secret@mlflow.example.com/#/experiments/3/runs/{RUN_ID}"
    md = mlflow_images_md(url, {"reliability": "plots/reliability.png"}).value
    assert "secret" not in md
    assert md == (
        "![reliability](https://***@mlflow.example.com/get-artifact?"
        f"path=plots/reliability.png&run_uuid={RUN_ID})"
    )
    with pytest.raises(ValueError, match=r"not an MLflow run page: 'http://127.0.0.1:5000/#/m"):
        mlflow_images_md("http://127.0.0.1:5000/#/models", {"x": "plots/x.png"})


def test_an_embedded_png_is_too_long_to_show_inline():
    assert len(image_md(b"\x89PNG" + bytes(800), "reliability").value) > MARKDOWN_INLINE_LIMIT


def _row(sharpe, dd, trades, total):
    return {"sharpe": sharpe, "max_drawdown": dd, "n_trades": trades, "total_return": total}


def test_backtest_summary_is_a_short_table_of_the_key_rows():
    bt = {
        **_row(-1.234, 0.2, 12, -0.051),
        "gross_of_costs": _row(0.5, 0.1, 12, 0.01),
        "at_2x_costs": _row(-2.5, 0.3, 12, -0.1),
        "random_same_turnover": _row(-1.0, 0.25, 12, -0.06),
        "models": {"lgbm": _row(0.0, 0.0, 0, 0.0), "deep": _row(0.1, 0.01, 1, 0.001)},
        "buy_and_hold": _row(1.5, 0.32, 1, 1.13),
        "flat": _row(None, 0.0, 0, 0.0),
    }
    md = backtest_summary_md(bt)
    assert len(md) < MARKDOWN_INLINE_LIMIT
    assert md.splitlines() == [
        "| strategy | Sharpe | max DD | trades | total return |",
        "|---|---|---|---|---|",
        "| policy (ensemble) | -1.23 | 20.0% | 12 | -5.1% |",
        "| at 2x costs | -2.50 | 30.0% | 12 | -10.0% |",
        "| random, same turnover | -1.00 | 25.0% | 12 | -6.0% |",
        "| buy and hold | 1.50 | 32.0% | 1 | 113.0% |",
    ]
