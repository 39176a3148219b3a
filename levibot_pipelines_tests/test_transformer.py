import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from levibot_pipelines.core.models.mc_dropout import MC_KEYS
from levibot_pipelines.core.models.transformer import (
    PROFILES,
    LevibotTransformer,
    TransformerConfig,
    count_flops,
    load_model,
    resolve_profile,
    save_model,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from levibot_pipelines.core.models.transformer_loss import evaluate_loss
from levibot_pipelines.core.models.transformer_training import fit_scaler, fit_transformer, predict

TINY = TransformerConfig(n_features=4, window=8, d_model=16, n_heads=2, n_layers=1, d_ff=32)


def _model(config: TransformerConfig = TINY, seed: int = 0) -> LevibotTransformer:
    torch.manual_seed(seed)
    return LevibotTransformer(config)


def _x(batch: int, config: TransformerConfig = TINY, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.window, config.n_features, generator=g)


def _task(n: int = 600, noise_labels: bool = False, seed: int = 0):
    """Feature 0 at the window's last bar decides the label; the other features are noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, TINY.n_features)).astype(np.float32) * [0.01, 1.0, 5.0, 0.1]
    X = X.astype(np.float32)
    y_up = rng.integers(0, 2, n).astype(float) if noise_labels else (X[:, 0] > 0).astype(float)
    fwd_ret = 0.2 * X[:, 0] + 0.001 * rng.normal(size=n)
    return X, y_up, fwd_ret


def test_forward_shapes_and_ranges():
    model = _model()
    out = model(_x(5))
    assert set(out) == {"logit", "p_up", "mu", "sigma"}
    assert all(v.shape == (5,) for v in out.values())
    assert torch.all(out["sigma"] > 0)
    assert torch.all((out["p_up"] > 0) & (out["p_up"] < 1))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8, 4\), got \(5, 7, 4\)"):
        model(_x(5)[:, 1:])


def test_eval_mode_is_deterministic_and_mc_is_not():
    model = _model()
    x = _x(6)
    assert not model.training
    a, b = model(x, mc=False), model(x, mc=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c, d = model(x, mc=True), model(x, mc=True)
    assert not torch.equal(c["mu"], d["mu"])
    assert not model.training  # MC sampling never flips the module mode


def test_spread_shrinks_with_dropout():
    state = _model().state_dict()
    x = _x(64)

    def epistemic(p: float) -> np.ndarray:
        model = LevibotTransformer(TransformerConfig(**{**TINY.to_dict(), "dropout": p}))
        model.load_state_dict(state)
        return model.mc_predict(x, n_samples=100, seed=0)["epistemic"]

    assert np.all(epistemic(0.0) == 0.0)
    assert epistemic(0.05).mean() < epistemic(0.3).mean()


def _randomised(config: TransformerConfig, seed: int) -> LevibotTransformer:
    """A model with O(1) random weights everywhere (LayerNorm, biases and scaling included)."""
    model = _model(config, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.ndim >= 2 else 1.0))
    model.set_scaling(np.linspace(-1, 1, config.n_features), np.full(config.n_features, 2.0), 0.01)
    return model


@pytest.mark.parametrize("window", [8, 32])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_last_token_path_equals_the_full_computation(window: int, n_layers: int):
    config = TransformerConfig(**{**TINY.to_dict(), "window": window, "n_layers": n_layers})
    for seed in range(3):
        model = _randomised(config, seed)
        x = _x(5, config, seed=seed + 10)
        full = model._encode(x, mc=False, last_only=False)
        torch.testing.assert_close(model._encode(x, mc=False), full, atol=1e-5, rtol=1e-4)
        # gradients too: training takes the same path
        model(x)["mu"].square().sum().backward()
        fast = {k: p.grad.clone() for k, p in model.named_parameters()}
        model.zero_grad()
        (model.head(full)[:, 1] * model.target_scale).square().sum().backward()
        for k, p in model.named_parameters():
            torch.testing.assert_close(fast[k], p.grad, atol=1e-5, rtol=1e-4, msg=k)
    # the last block really runs on the last position alone; the others on the whole window
    shapes: list[tuple[int, ...]] = []
    for block in model.blocks:
        block.mlp.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    model(x)
    assert shapes == [(5, window, 16)] * (n_layers - 1) + [(5, 1, 16)]
    # dropout p = 0 under mc=True: the MC path is the deterministic one, exactly
    no_drop = LevibotTransformer(TransformerConfig(**{**config.to_dict(), "dropout": 0.0}))
    no_drop.load_state_dict(model.state_dict())
    torch.testing.assert_close(no_drop._encode(x, mc=True), full, atol=1e-5, rtol=1e-4)


def test_last_token_path_keeps_the_mc_distribution():
    config = TransformerConfig(**{**TINY.to_dict(), "n_layers": 2, "dropout": 0.2})
    model = _randomised(config, seed=0)
    x = _x(3, config).repeat(2000, 1, 1)  # 2000 draws of 3 bars, draw-major
    with torch.no_grad():
        torch.manual_seed(1)
        fast = model._encode(x, mc=True).view(2000, 3, -1)  # (n*b, C) -> (n, b, C)
        torch.manual_seed(2)
        full = model._encode(x, mc=True, last_only=False).view(2000, 3, -1)
    se = ((fast.var(dim=0) + full.var(dim=0)) / 2000).sqrt()
    assert torch.all((fast.mean(dim=0) - full.mean(dim=0)).abs() <= 5 * se + 1e-6)
    ratio = fast.var(dim=0).mean() / full.var(dim=0).mean()
    assert 0.9 < ratio < 1.1


def test_mc_predict_outputs_and_chunking():
    model = _model()
    x = _x(10)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    for chunk in (1, 7, 30, 8192):
        out = model.mc_predict(x, n_samples=12, chunk_size=chunk)
        assert set(out) == set(MC_KEYS) and all(v.shape == (10,) for v in out.values())
        assert max(seen) <= chunk
        seen.clear()
    np.testing.assert_allclose(out["total"], out["aleatoric"] + out["epistemic"])
    std_p = np.sqrt(out["epistemic_p"])
    expected = np.abs(2 * out["p_up"] - 1) * np.clip(1 - 2 * std_p, 0, 1)
    np.testing.assert_allclose(out["confidence"], expected)
    # seeded: same seed -> same draws, and the caller's RNG is untouched
    state = torch.get_rng_state()
    again = model.mc_predict(x, n_samples=12, chunk_size=8192)
    assert torch.equal(state, torch.get_rng_state())
    assert all(np.array_equal(out[k], again[k]) for k in MC_KEYS)
    # no dropout: every chunking gives the deterministic forward
    no_drop = LevibotTransformer(TransformerConfig(**{**TINY.to_dict(), "dropout": 0.0}))
    no_drop.load_state_dict(model.state_dict())
    det = no_drop(x)["p_up"].detach().numpy()
    for chunk in (1, 5, 8192):
        np.testing.assert_allclose(no_drop.mc_predict(x, 12, chunk)["p_up"], det, atol=1e-6)
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        model.mc_predict(x, n_samples=0)


def test_batched_and_loop_mc_agree_in_distribution():
    model = _model()
    with torch.no_grad():  # larger weights so the dropout spread is clearly measurable
        for p in model.parameters():
            p.mul_(10 if p.ndim >= 2 else 1)
    x = _x(16)
    n = 200
    a = model.mc_predict(x, n_samples=n, seed=1)
    b = model.mc_predict_loop(x, n_samples=n, seed=2)
    assert set(a) == set(b)
    se_p = np.sqrt((a["epistemic_p"] + b["epistemic_p"]) / n)
    se_mu = np.sqrt((a["epistemic"] + b["epistemic"]) / n)
    assert np.all(np.abs(a["p_up"] - b["p_up"]) <= 5 * se_p + 1e-9)
    assert np.all(np.abs(a["mu"] - b["mu"]) <= 5 * se_mu + 1e-12)
    assert 0.7 < a["epistemic"].mean() / b["epistemic"].mean() < 1.4
    assert 0.7 < a["aleatoric"].mean() / b["aleatoric"].mean() < 1.4


def test_save_load_round_trip_through_bytes():
    model = _model()
    model.set_scaling(np.arange(4.0), np.full(4, 2.0), 0.01)
    state, config = save_model(model)
    blob = state_dict_to_bytes(state)
    restored = load_model(state_dict_from_bytes(blob), json.loads(json.dumps(config)))
    assert restored.config == model.config
    assert float(restored.target_scale) == pytest.approx(0.01)
    x = _x(7)
    a, b = model(x), restored(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"unknown TransformerConfig keys \['heads'\]"):
        load_model(state, {**config, "heads": 3})


def test_training_learns_a_learnable_task():
    X, y_up, fwd_ret = _task()
    ends = np.arange(TINY.window - 1, len(X))
    train_ends, val_ends = ends[ends < 400], ends[ends >= 420]
    seen: list[dict] = []
    model, history = fit_transformer(
        X, y_up, fwd_ret, train_ends, val_ends, TINY,
        epochs=6, batch_size=32, lr=3e-3, seed=0, on_epoch=seen.append,
    )  # fmt: skip
    assert seen == history
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert max(h["val_acc"] for h in history) > 0.8
    assert set(history[0]) >= {"epoch", "train_loss", "val_loss", "val_bce", "val_nll", "seconds"}
    assert all(h["samples_per_s"] > 0 and h["train_samples"] == 393 for h in history)
    # the scaler saw the train rows only (rows 0..399)
    mean, std = fit_scaler(X, train_ends, TINY.window)
    np.testing.assert_allclose(model.feature_mean.numpy(), X[:400].mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std, X[:400].astype(np.float64).std(0))
    assert float(model.target_scale) == pytest.approx(fwd_ret[train_ends].std(), rel=1e-6)
    p = predict(model, X, val_ends, n_samples=0, batch_size=50)
    assert np.mean((p["p_up"] > 0.5) == y_up[val_ends]) > 0.8
    mc = predict(model, X, val_ends[:20], n_samples=8)
    assert set(mc) == set(MC_KEYS) and mc["p_up"].shape == (20,)


def test_early_stopping_restores_the_best_epoch_and_is_deterministic():
    X, y_up, fwd_ret = _task(n=300, noise_labels=True)  # nothing to learn: val loss soon rises
    ends = np.arange(TINY.window - 1, len(X))
    train_ends, val_ends = ends[ends < 150], ends[ends >= 160]
    kwargs = dict(epochs=30, batch_size=16, lr=1e-2, patience=2, max_train_samples=64, seed=3)
    model, history = fit_transformer(X, y_up, fwd_ret, train_ends, val_ends, TINY, **kwargs)
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert len(history) == best + 1 + 2 < 30  # stopped `patience` epochs after the best
    assert all(h["train_samples"] == 64 for h in history)
    val = evaluate_loss(model, X, y_up, fwd_ret, val_ends)
    assert val["loss"] == pytest.approx(losses[best], rel=1e-6)
    again, history2 = fit_transformer(X, y_up, fwd_ret, train_ends, val_ends, TINY, **kwargs)
    assert [h["val_loss"] for h in history2] == losses
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_training_rejects_unlabeled_ends():
    X, y_up, fwd_ret = _task(n=100)
    y_up[50] = np.nan
    ends = np.arange(TINY.window - 1, 100)
    with pytest.raises(ValueError, match="train_ends: y_up is not 0/1 at 1 ends"):
        fit_transformer(X, y_up, fwd_ret, ends, ends, TINY, epochs=1)
    with pytest.raises(ValueError, match=r"val_ends must lie in \[7, 99\]"):
        fit_transformer(X, y_up, fwd_ret, ends[ends != 50], np.array([3]), TINY, epochs=1)


def test_count_flops_hand_computed():
    cfg = TransformerConfig(n_features=3, window=4, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    # one block, the last, so 1 query position: input 2*4*3*8=192, qkv (all 4 positions)
    # 2*4*8*24=1536, scores 2*1*4*8=64, weighted sum 64, out proj 2*1*8*8=128,
    # MLP 2*(2*1*8*16)=512, heads 2*8*3=48 -> 2544 per window
    assert count_flops(cfg, 2) == 2 * 2544
    # seed: input 2*128*10*128 = 327_680; 2 full blocks of
    # 8*128*128^2 + 4*128^2*128 + 4*128*128*256 = 41_943_040 (attention 4*128^2*128 = 8_388_608);
    # the last block 6*128*128^2 + 4*1*128*128 + 2*1*128^2 + 4*1*128*256 = 12_812_288
    # (attention 4*128*128 = 65_536); heads 2*128*3 = 768
    assert count_flops(PROFILES["seed"], 1) == 327_680 + 2 * 41_943_040 + 12_812_288 + 768
    # torch's counter agrees on every matmul it sees: all of them but the full blocks'
    # attention (fused scaled_dot_product_attention, which it skips on CPU)
    for config, skipped in ((cfg, 0), (PROFILES["seed"], 2 * 8_388_608)):
        with FlopCounterMode(display=False) as counter:
            LevibotTransformer(config)(torch.zeros(2, config.window, config.n_features))
        counts = counter.get_flop_counts()["Global"].items()
        assert sum(v for op, v in counts if "mm" in str(op)) == count_flops(config, 2) - 2 * skipped


def test_resolve_profile():
    assert resolve_profile("auto", cuda_available=False) == ("small", PROFILES["small"])
    assert resolve_profile("auto", cuda_available=True) == ("seed", PROFILES["seed"])
    assert resolve_profile("seed", cuda_available=False)[1] == TransformerConfig()
    with pytest.raises(ValueError, match=r"unknown model profile 'large'.*'auto', 'seed', 'small'"):
        resolve_profile("large", cuda_available=True)
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        TransformerConfig(d_model=30)
