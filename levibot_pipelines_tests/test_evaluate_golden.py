"""Golden: `levibot evaluate` on a small seeded synthetic market gives the report numbers recorded
in ``snapshots/evaluate_golden.json`` (to float tolerance). Every model metric and backtest figure
of the report is compared, so a refactor that changes a number, a fold or a seed fails here.

Regenerate only for a deliberate change of results:
``LEVIBOT_UPDATE_GOLDEN=1 pytest levibot_pipelines_tests/test_evaluate_golden.py``
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import polars as pl
import pytest

from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
from levibot_pipelines.core.evaluation.walk_forward import EvalConfig
from levibot_pipelines.core.models.transformer import TransformerConfig
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.conftest import SYMBOLS, synthetic_long

GOLDEN = Path(__file__).parent / "snapshots" / "evaluate_golden.json"
START_MS = 1_735_689_600_000  # 2025-01-01 00:00 UTC: a fixed market, whatever today is
TINY = TransformerConfig(window=16, d_model=16, n_heads=2, n_layers=1, d_ff=32)


def _numbers(doc, prefix: str = "") -> dict[str, float]:
    """Every number in ``doc`` keyed by its path (``BTCUSDT.models.lgbm.auc``)."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= _numbers(v, f"{prefix}{k}.")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out |= _numbers(v, f"{prefix}{i}.")
    elif isinstance(doc, bool) or doc is None:
        out[prefix[:-1]] = doc
    elif isinstance(doc, int | float):
        out[prefix[:-1]] = float(doc)
    return out


def run_golden_evaluate(tmp_path: Path) -> dict[str, float]:
    from levibot_pipelines.usecases.evaluate import run_evaluate

    files = tmp_path / "candles"
    files.mkdir()
    for symbol in SYMBOLS:
        bars = synthetic_long(2600, start_ms=START_MS, seed=11).filter(pl.col("symbol") == symbol)
        bars.drop("symbol").write_parquet(files / f"{symbol}-15m.parquet")
    settings = Settings.from_env(
        {
            "LEVIBOT_HOME": str(tmp_path / "unused"),
            "LEVIBOT_SOURCE": "files",
            "LEVIBOT_FILES_DIR": str(files),
            "LEVIBOT_START": "2000-01-01",
        }
    )
    cfg = EvalConfig(
        transformer=TINY,
        walk=WalkForwardConfig(train=900, val=250, calib=250, test=300, purge=20),
        horizon=1,
        epochs=1,
        mc_samples=4,
        max_train_samples=400,
        seed=0,
    )
    report = run_evaluate(settings, tmp_path / "out", cfg, "small", progress=lambda _: None)
    # Wall-clock seconds are the only numbers allowed to differ between runs.
    return {k: v for k, v in _numbers(report["symbols"]).items() if not k.endswith(".seconds")}


def test_evaluate_report_numbers_match_the_golden_file(tmp_path):
    got = run_golden_evaluate(tmp_path)
    if os.environ.get("LEVIBOT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), set(got) ^ set(want)
    assert len(want) > 300  # metrics, folds and backtests of three symbols, not a stub
    diffs = []
    for key, value in want.items():
        if value is None or isinstance(value, bool):
            ok = got[key] == value
        else:
            ok = math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9)
        if not ok:
            diffs.append(f"{key}: {got[key]!r} != golden {value!r}")
    assert not diffs, "\n".join(diffs[:40])


LAYOUT = {
    "BTCUSDT.n_test": 900.0,
    "SOLUSDT.folds": 3.0,
    "BTCUSDT.models.deep.skill.deciles.0.n": 90.0,
    "BTCUSDT.models.deep.skill.deciles.9.n": 90.0,
}


@pytest.mark.parametrize("key", sorted(LAYOUT))
def test_golden_layout_is_what_the_walk_forward_gives(key):
    # 2600 bars -> 2401 feature rows; windows of 16 start at row 15, the newest row has no
    # label: 2385 samples. One fold spans 900+250+250+300+3*20 = 1760 -> (2385-1760)//300+1 = 3.
    # The Transformer's 900 test p are distinct: each of its 10 score deciles holds 90 bars.
    want = json.loads(GOLDEN.read_text())
    assert want[key] == LAYOUT[key]
