"""Issue 14: the precision decision, the cheaper dropout masks, the MC prefix computed once, the
saved-model layout, and the uncertainty estimate before vs after the attention's dropout
left its weights (only the dropout on its output remains)."""

import numpy as np
import pytest
import torch

from benchmarks.models import legacy_forward, legacy_mc_predict
from levibot_pipelines.adapters.hardware import cpu_flags
from levibot_pipelines.core.data.features import build_features
from levibot_pipelines.core.data.windows import gather_windows, labeled_ends, window_ends
from levibot_pipelines.core.evaluation.symbol_data import symbol_data
from levibot_pipelines.core.metrics import picp
from levibot_pipelines.core.models.mc_dropout import dropout, dropout_mask, seeded_rng
from levibot_pipelines.core.models.precision import PRECISIONS, choose_precision
from levibot_pipelines.core.models.transformer import (
    TransformerConfig,
    load_model,
)
from levibot_pipelines.core.models.transformer_training import fit_transformer
from levibot_pipelines.settings import PRECISIONS as SETTING_PRECISIONS
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.conftest import synthetic_long
from levibot_pipelines_tests.test_transformer import _randomised

CPU = torch.device("cpu")
TINY = TransformerConfig(n_features=4, window=8, d_model=16, n_heads=2, n_layers=2, d_ff=32)
AMX = "fpu vme sse2 avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8"
ZEN4 = "fpu vme sse2 avx2 avx512f avx512_vnni avx512_bf16"
NO_BF16 = "fpu vme sse2 avx2 avx512f avx512_vnni"


def _x(batch: int, config: TransformerConfig = TINY, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.window, config.n_features, generator=g)


def test_precision_rules_on_hand_written_flags_and_probe_timings():
    # the setting wins when it is not auto, whatever the machine
    assert choose_precision("fp32", device_type="cpu", cpu_flags=AMX, probe_s=(1.0, 0.1)) == "fp32"
    assert choose_precision("bf16", device_type="cpu", cpu_flags=NO_BF16) == "bf16"
    # auto on a CPU: no bf16 instruction -> fp32 without a probe
    assert choose_precision("auto", device_type="cpu", cpu_flags=NO_BF16) == "fp32"
    assert choose_precision("auto", device_type="cpu", cpu_flags="") == "fp32"
    # a bf16 instruction: the probe decides, bf16 at >= 1.5x fp32's speed
    probes = {(1e-3, 0.2e-3): "bf16", (1.5e-3, 1e-3): "bf16", (1.4e-3, 1e-3): "fp32"}
    probes[(1e-3, 5e-3)] = "fp32"  # bf16 converted in software: 5x slower
    for flags in (AMX, ZEN4):
        for probe_s, want in probes.items():
            got = choose_precision("auto", device_type="cpu", cpu_flags=flags, probe_s=probe_s)
            assert got == want, (flags, probe_s)
    # a flag is a whole word, not a substring
    assert choose_precision("auto", device_type="cpu", cpu_flags="avx512_bf16x") == "fp32"
    # CUDA: bf16 where the GPU supports it
    assert choose_precision("auto", device_type="cuda", cuda_bf16=True) == "bf16"
    assert choose_precision("auto", device_type="cuda", cuda_bf16=False) == "fp32"
    with pytest.raises(ValueError, match=r"precision setting must be one of .*got 'fp16'"):
        choose_precision("fp16", device_type="cpu")
    with pytest.raises(ValueError, match="needs the matmul probe_s"):
        choose_precision("auto", device_type="cpu", cpu_flags=AMX)
    with pytest.raises(ValueError, match="probe_s must be two positive durations"):
        choose_precision("auto", device_type="cpu", cpu_flags=AMX, probe_s=(0.0, 1e-3))
    with pytest.raises(ValueError, match="device_type must be 'cpu' or 'cuda', got 'mps'"):
        choose_precision("auto", device_type="mps")
    # the setting's values are the core's
    assert SETTING_PRECISIONS == PRECISIONS
    assert Settings.from_env({"LEVIBOT_HOME": "/tmp/x"}).models.precision == "auto"


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert cpu_flags(info) == "fpu avx512f avx512_bf16"
    info.write_text("processor\t: 0\n")
    assert cpu_flags(info) == ""
    assert cpu_flags(tmp_path / "missing") == ""


def _dropped(shape: tuple[int, ...], p: float) -> torch.Tensor:
    return dropout_mask(shape, p, torch.float32, CPU) == 0


def test_dropout_mask_rate_independence_and_seeding():
    with seeded_rng(0, CPU):
        mask = _dropped((1000, 1000), 0.1)
    again = _dropped((1000, 1000), 0.1)
    with seeded_rng(0, CPU):
        assert torch.equal(_dropped((1000, 1000), 0.1), mask)  # same seed, same mask
    assert not torch.equal(again, mask)
    p = 3277 / 32768  # round(0.1 * 2^15) / 2^15
    se = (p * (1 - p) / 1e6) ** 0.5  # 0.0003
    assert abs(mask.float().mean().item() - p) < 4 * se
    # the four 15-bit slices of one int64 are independent: neighbours both dropped at rate p^2
    flat = mask.flatten().float()
    for lag in (1, 2, 3, 4):
        both = (flat[:-lag] * flat[lag:]).mean().item()
        assert abs(both - p * p) < 4 * (p * p / 1e6) ** 0.5
    with seeded_rng(1, CPU):
        assert abs(_dropped((100_000,), 0.5).float().mean().item() - 0.5) < 0.006
    # the kept values carry 1 / (1 - p'), in the dtype asked for
    kept = dropout_mask((7, 9), 0.1, torch.bfloat16, CPU)
    assert kept.dtype == torch.bfloat16 and set(kept.unique().tolist()) <= {0.0, 1.109375}
    assert not _dropped((10, 10), 0.0).any()
    with pytest.raises(ValueError, match=r"dropout p must be in \[0, 1 - 2\^-16\), got 1.0"):
        _dropped((3,), 1.0)
    with pytest.raises(ValueError, match="got 0.99999"):
        _dropped((3,), 0.99999)  # rounds to p' = 1


def test_dropout_scales_the_kept_values_and_its_gradient_is_the_mask():
    x = torch.ones(400, 250, requires_grad=True)
    with seeded_rng(3, CPU):
        y = dropout(x, 0.1, active=True)
    scale = 1 / (1 - 3277 / 32768)
    kept = y.detach() != 0
    assert torch.allclose(y.detach()[kept], torch.tensor(scale))
    assert 0.09 < 1 - kept.float().mean().item() < 0.11
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the mean
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(sum y)/dx = mask * scale
    assert dropout(x, 0.1, active=False) is x and dropout(x, 0.0, active=True) is x
    bf = torch.ones(8, 8, dtype=torch.bfloat16)
    assert dropout(bf, 0.5, active=True).dtype == torch.bfloat16


def test_mc_runs_the_input_projection_once_per_window():
    model = _randomised(TINY, 0)
    x = _x(3)
    rows = {"embed": [], "block0": []}
    model.embed.register_forward_hook(lambda _m, args, _o: rows["embed"].append(args[0].shape[0]))
    model.blocks[0].register_forward_pre_hook(
        lambda _m, args: rows["block0"].append(args[0].shape[0])
    )
    model.mc_predict(x, n_samples=50)
    assert rows == {"embed": [3], "block0": [150]}  # 3 windows projected, 3 x 50 draws sampled
    # draws after the prefix == the window repeated before it, mask for mask (same seed)
    with seeded_rng(5, CPU), torch.no_grad():
        once = model(x, mc=True, draws=4)
    with seeded_rng(5, CPU), torch.no_grad():
        repeated = model(x.repeat(4, 1, 1), mc=True)
    for k in once:
        torch.testing.assert_close(once[k], repeated[k], atol=1e-6, rtol=1e-5)
    rows["block0"].clear()
    model.mc_predict(_x(10), n_samples=12, chunk_size=30)  # 2 bars x 12 draws a pass
    assert max(rows["block0"]) <= 30


# The saved layout of a one-layer model, written out by hand: what models stored in MLflow
# before issue 14 hold (the fused ``qkv`` dates from before it).
OLD_KEYS = [
    "embed.weight", "embed.bias", "pos",
    "blocks.0.ln_1.weight", "blocks.0.ln_1.bias",
    "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias",
    "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias",
    "blocks.0.ln_2.weight", "blocks.0.ln_2.bias",
    "blocks.0.mlp.fc.weight", "blocks.0.mlp.fc.bias",
    "blocks.0.mlp.proj.weight", "blocks.0.mlp.proj.bias",
    "ln_f.weight", "ln_f.bias", "head.weight", "head.bias",
    "feature_mean", "feature_std", "target_scale",
]  # fmt: skip


def test_models_saved_before_load_and_predict_as_before():
    config = TransformerConfig(**{**TINY.to_dict(), "n_layers": 1})
    source = _randomised(config, 0)
    old_state = {k: v.clone() for k, v in source.state_dict().items()}
    assert sorted(old_state) == sorted(OLD_KEYS)  # the layout is unchanged: no key mapping
    model = load_model(old_state, config.to_dict())  # strict: every key must match
    x = _x(6, config)
    new, old = model(x), legacy_forward(model, x, mc=False)
    for k in ("logit", "mu", "sigma"):
        torch.testing.assert_close(new[k], old[k], atol=1e-5, rtol=1e-5)
    assert model.precision == "fp32"  # the precision is never saved


def _trained_model(precision: str = "fp32"):
    """A small model fitted on one synthetic symbol, and 400 test windows with their returns."""
    config = TransformerConfig(window=16, d_model=16, n_heads=2, n_layers=2, d_ff=32)
    bars = synthetic_long(3200, seed=3)
    data = symbol_data(build_features(bars, tf_ms=900_000, horizon=1), "BTCUSDT")
    ends = labeled_ends(
        window_ends(data.timestamps, config.window, 900_000), data.y_up, data.fwd_ret
    )
    train, val, test = ends[:2000], ends[2100:2600], ends[-400:]
    model, history = fit_transformer(
        data.X, data.y_up, data.fwd_ret, train, val, config,
        epochs=2, batch_size=128, seed=0, precision=precision,
    )  # fmt: skip
    x = torch.as_tensor(gather_windows(data.X, test, config.window))
    return model, history, x, data.fwd_ret[test]


def test_uncertainty_estimate_is_unchanged_by_the_dropout_move():
    # One fixed trained model, MC-sampled as before issue 14 (dropout on the attention weights
    # and output, F.dropout masks) and now (on its output only, 15-bit masks). Tolerance: PICP
    # within 0.02; mean epistemic spreads within 0.9x-1.1x (measured: 0.98-1.02; another
    # seed moves them by 1-2%).
    model, _, x, ret = _trained_model()
    before = legacy_mc_predict(model, x, n_samples=50, seed=0)
    after = model.mc_predict(x, n_samples=50, seed=0)
    for level in (0.5, 0.9):
        a = picp(ret, after["mu"], np.sqrt(after["total"]), level)
        b = picp(ret, before["mu"], np.sqrt(before["total"]), level)
        assert abs(a - b) <= 0.02, (level, a, b)
    for key in ("epistemic", "epistemic_p"):
        ratio = after[key].mean() / before[key].mean()
        assert 0.9 <= ratio <= 1.1, (key, ratio)
    assert np.abs(after["p_up"] - before["p_up"]).max() < 0.01
    np.testing.assert_allclose(after["aleatoric"], before["aleatoric"], rtol=0.05)
    # reproducible as before: the same seed gives the same draws
    again = model.mc_predict(x, n_samples=50, seed=0)
    assert all(np.array_equal(after[k], again[k]) for k in after)


def test_bf16_predicts_like_fp32_and_trains():
    model = _randomised(TINY, 0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.2)  # ordinary trained-model scales
    x = _x(32)
    fp32 = model(x)
    bf16 = model.set_precision("bf16")(x)
    assert all(v.dtype == torch.float32 for v in bf16.values())
    assert (bf16["p_up"] - fp32["p_up"]).abs().max() < 0.01
    torch.testing.assert_close(bf16["sigma"], fp32["sigma"], rtol=0.03, atol=0)
    a, b = model.mc_predict(x, 20, seed=4), model.mc_predict(x, 20, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # seeded in bf16 too
    with pytest.raises(ValueError, match="precision must be 'fp32' or 'bf16', got 'auto'"):
        model.set_precision("auto")
    trained, history, _, _ = _trained_model("bf16")
    assert trained.precision == "bf16"
    assert history[-1]["val_loss"] < history[0]["val_loss"] + 0.01
    assert np.isfinite([h["train_loss"] for h in history]).all()


def test_eval_config_carries_the_resolved_precision():
    from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
    from levibot_pipelines.usecases.evaluate import eval_config

    walk = WalkForwardConfig(train=900, val=250, calib=250, test=300, purge=20)
    kw = dict(walk=walk, horizon=1, epochs=1, mc_samples=4)
    assert eval_config("small", **kw)[1].precision == "fp32"  # default: unchanged numbers
    _, cfg = eval_config("small", precision="bf16", **kw)
    assert cfg.precision == "bf16" and cfg.transformer_kwargs(0)["precision"] == "bf16"
    assert eval_config("small", precision="auto", **kw)[1].precision in ("fp32", "bf16")
    assert cfg.to_dict()["precision"] == "bf16"  # the report's and the run's config carry it


def test_the_training_run_logs_the_precision_as_an_mlflow_param():
    from levibot_pipelines.adapters.run_log import flatten_params
    from levibot_pipelines.core.evaluation.splits import WalkForwardConfig
    from levibot_pipelines.core.evaluation.walk_forward import EvalConfig, SymbolData
    from levibot_pipelines.usecases.train import _run_params

    n = 12
    data = SymbolData(
        symbol="BTCUSDT",
        timestamps=np.arange(n, dtype=np.int64) * 900_000,
        X=np.zeros((n, 10), np.float32),
        y_up=np.zeros(n),
        fwd_ret=np.zeros(n),
    )
    rows = {"train": np.arange(4), "val": np.arange(4, 6), "calib": np.arange(6, 8)}
    rows["test"] = np.arange(8, 12)
    walk = WalkForwardConfig(train=4, val=2, calib=2, test=4, purge=0)
    cfg = EvalConfig(TINY, walk=walk, horizon=1, epochs=1, mc_samples=4, precision="bf16")
    flat = flatten_params(_run_params(data, cfg, "deep", rows, {"train": 4}))
    assert flat["precision"] == "bf16" and flat["config.precision"] == "bf16"
    assert "precision" not in _run_params(data, cfg, "lgbm", rows, {"train": 4})
