"""Issue 14: what ``auto`` chooses on this machine, measured once per machine and kept under
``$LEVIBOT_HOME/hardware/`` (every process of the machine decides alike), and the seed profile
on a CPU when its estimated training time fits the budget (``LEVIBOT_TRAIN_BUDGET_MIN``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from levibot_pipelines.adapters import hardware
from levibot_pipelines.adapters.hardware import machine_key, measured, resolve_precision
from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
from levibot_pipelines.core.models.profile_choice import (
    Throughput,
    TrainingWork,
    choose_cpu_profile,
    estimated_seconds,
    seed_throughput,
    training_work,
)
from levibot_pipelines.settings import Settings, SettingsError
from levibot_pipelines.usecases.evaluate import eval_config, pipeline_budget

AMX_AND_AVX512 = "fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16"


def keep(home, name: str, doc: dict) -> None:
    """Keep ``doc`` as this machine's measurement ``name`` under ``home``, where
    ``adapters.hardware.measured`` reads it."""
    (home / "hardware").mkdir(parents=True, exist_ok=True)
    (home / "hardware" / f"{name}-{machine_key()}.json").write_text(json.dumps(doc))


def test_training_work_and_its_estimate_by_hand():
    # The pipeline's defaults: 4 epochs of min(20,000, 8,000) windows; the val loss each epoch
    # (4 x 3,000 rows) and 50 MC draws of val + calib + test (10,000 rows).
    work = training_work(
        fits=15, epochs=4, train=20_000, val=3_000, calib=3_000, test=4_000,
        max_train_samples=8_000, mc_samples=50,
    )  # fmt: skip
    assert work == TrainingWork(fits=15, train_windows=32_000, forward_rows=512_000)
    # 32,000 / 1,000 + 512,000 / 4,000 = 32 + 128 = 160 s a fit; 15 fits: 2,400 s = 40 min.
    assert estimated_seconds(work, Throughput(1_000.0, 4_000.0)) == 2_400.0
    uncapped = training_work(
        fits=1, epochs=2, train=900, val=100, calib=100, test=100,
        max_train_samples=None, mc_samples=3,
    )  # fmt: skip
    assert uncapped == TrainingWork(fits=1, train_windows=1_800, forward_rows=200 + 900)
    assert choose_cpu_profile(2_400.0, 2_400.0) == "seed"  # fits exactly
    assert choose_cpu_profile(2_400.1, 2_400.0) == "small"
    with pytest.raises(ValueError, match="training budget must be positive seconds, got 0"):
        choose_cpu_profile(1.0, 0)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        training_work(
            fits=1, epochs=0, train=1, val=1, calib=1, test=1, max_train_samples=None,
            mc_samples=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="forward_rows_per_s must be a positive rate, got nan"):
        Throughput(1.0, math.nan)


def test_seed_throughput_measures_positive_rates_and_leaves_the_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    speed = seed_throughput("fp32", batch=16, steps=1, mc_bars=2)
    assert torch.equal(torch.rand(3), expected)
    assert speed.train_windows_per_s > 0 and speed.forward_rows_per_s > 0


def test_a_measurement_is_kept_per_machine_and_the_first_writer_wins(tmp_path):
    calls = []

    def measure() -> dict:
        calls.append(1)
        return {"rate": 10.0 * len(calls)}

    assert measured(tmp_path, "thing", measure, ("rate",)) == {"rate": 10.0}
    assert measured(tmp_path, "thing", measure, ("rate",)) == {
        "rate": 10.0
    }  # kept: not measured again
    assert len(calls) == 1
    kept = tmp_path / "hardware" / f"thing-{machine_key()}.json"
    doc = json.loads(kept.read_text())
    assert doc["rate"] == 10.0 and doc["machine"]["torch"] == torch.__version__
    assert list(kept.parent.iterdir()) == [kept]  # no temporary file left behind
    # A process that measured while another kept its value first returns the kept value.
    kept.write_text(json.dumps({"rate": 99.0}))
    assert measured(tmp_path, "thing", measure, ("rate",)) == {"rate": 99.0}
    # An unreadable kept file, or one without a positive number under a key, is measured
    # again and replaced.
    for n, text in enumerate(('{"rate": 1', '{"rate": -1}', '{"rate": NaN}', "[1]"), start=2):
        kept.write_text(text)
        assert measured(tmp_path, "thing", measure, ("rate",)) == {"rate": 10.0 * n}
        assert json.loads(kept.read_text())["rate"] == 10.0 * n
    assert measured(None, "thing", measure, ("rate",)) == {"rate": 60.0}  # no home: not kept
    # A home where nothing can be written (here a file, so even root cannot): measured, used.
    blocked = tmp_path / "not_a_directory"
    blocked.write_text("")
    assert measured(blocked, "thing", measure, ("rate",)) == {"rate": 70.0}


def test_auto_precision_follows_the_kept_probe(tmp_path, monkeypatch):
    """Two homes with different kept probes on a CPU with bf16 instructions: bf16 where the
    kept probe says bf16 is 4x faster, fp32 where it says 1.2x (under 1.5x)."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: AMX_AND_AVX512)
    for name, probe, expected in (("fast", 0.25, "bf16"), ("slow", 1 / 1.2, "fp32")):
        home = tmp_path / name
        keep(home, "matmul_probe", {"fp32_s": 1e-3, "bf16_s": probe * 1e-3})
        assert resolve_precision("auto", "cpu", home) == expected
    assert resolve_precision("fp32", "cpu", tmp_path / "fast") == "fp32"  # the setting wins


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is seed on CUDA")
def test_auto_profile_is_seed_on_a_cpu_when_the_estimate_fits_the_budget(tmp_path):
    """Kept seed rates of 100 training windows/s and 265 MC rows/s in fp32. The tests'
    layout (600, 150, 150, 200), 1 epoch, 5 draws: a fit is 600 windows (6 s) and 150 + 500 x 5
    = 2,650 forward rows (10 s), 16 s. Three symbols and one report fold: 3 x (2 + 1) = 9
    fits, 144 s = 2.4 min."""
    keep(
        tmp_path,
        "seed_throughput_fp32",
        {"train_windows_per_s": 100.0, "forward_rows_per_s": 265.0},
    )
    walk = WalkForwardConfig(train=600, val=150, calib=150, test=200, purge=130)
    kw = dict(walk=walk, horizon=1, epochs=1, mc_samples=5, precision="fp32", home=tmp_path)
    budget = pipeline_budget(symbols=3, report_folds=1, minutes=2.4)
    assert budget.fits == 9
    name, cfg = eval_config("auto", budget=budget, **kw)
    assert name == "seed" and cfg.transformer.window == 128 and cfg.transformer.d_model == 128
    name, cfg = eval_config("auto", budget=pipeline_budget(3, 1, minutes=2.3), **kw)
    assert name == "small" and cfg.transformer.window == 32
    assert eval_config("auto", **kw)[0] == "small"  # no budget (levibot evaluate): small
    assert eval_config("seed", budget=pipeline_budget(3, 1, 0.01), **kw)[0] == "seed"  # asked


def test_the_budget_setting():
    assert Settings.from_env({"LEVIBOT_HOME": "/tmp/x"}).models.train_budget_min == 30.0
    env = {"LEVIBOT_HOME": "/tmp/x", "LEVIBOT_TRAIN_BUDGET_MIN": "7.5"}
    assert Settings.from_env(env).models.train_budget_min == 7.5
    with pytest.raises(SettingsError, match=r"LEVIBOT_TRAIN_BUDGET_MIN='-1': expected a positive"):
        Settings.from_env({"LEVIBOT_HOME": "/tmp/x", "LEVIBOT_TRAIN_BUDGET_MIN": "-1"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is seed on CUDA")
def test_levibot_train_and_demo_name_the_profile_auto_resolved_to(tmp_path):
    """The defaults (3 symbols, 3 report folds: 15 fits of 4 x 8,000 training windows and
    4 x 3,000 + 10,000 x 50 = 512,000 MC rows) at kept rates of 32,000 windows/s and 512,000
    rows/s: 2 s a fit, 30 s = 0.5 min in all."""
    from levibot_pipelines.cli import resolved_profile
    from levibot_pipelines.settings import ModelSettings

    rates = {"train_windows_per_s": 32_000.0, "forward_rows_per_s": 512_000.0}
    keep(tmp_path, "seed_throughput_fp32", rates)

    def settings(**models) -> Settings:
        return Settings(home=tmp_path, models=ModelSettings(precision="fp32", **models))

    assert resolved_profile(settings(train_budget_min=0.5)) == "seed (auto)"
    assert resolved_profile(settings(train_budget_min=0.49)) == "small (auto)"
    assert resolved_profile(settings(profile="small", train_budget_min=0.5)) == "small"
