"""Model benchmarks (issue 14: training and inference near the hardware's limit).

- ``matmul_peak``: 2048^3 matmul GFLOP/s in fp32 and bf16, measured in the same run.
- ``precision``: what ``LEVIBOT_PRECISION=auto`` chooses here, with its inputs (CPU flags, probe).
- ``seed_training``: seed-profile training samples/s and achieved GFLOP/s in the chosen precision
  (and in fp32), against the matmul peak of the dtype used; before (``legacy_forward``: today's
  forward pass before issue 14, on the same weights) and a plain ``nn.TransformerEncoder``.
- ``mc_inference``: 3 symbols x T=50, seed profile, p50 ms: before (``legacy_mc_predict``, the
  batched pass of today's code) vs after (``mc_predict``), target >= 3x.
- ``uncertainty_equivalence``: one trained model, MC before vs after: PICP and mean epistemic
  spread (the attention dropout on its weights removed; the one on its output stays).
- ``profile_fit``: whether the seed profile's retrain fits the pipeline's training budget here.
- ``demo_training``: the demo's wall time and peak memory (child process).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from levibot_pipelines.adapters.hardware import cpu_flags, resolve_precision
from levibot_pipelines.core.models.mc_dropout import (
    MC_KEYS,
    check_mc_args,
    seeded_rng,
    summarise_draws,
)
from levibot_pipelines.core.models.precision import BF16_FLAGS, matmul_probe
from levibot_pipelines.core.models.profile_choice import choose_cpu_profile, seed_throughput
from levibot_pipelines.core.models.transformer import (
    MC_PASS_ELEMENTS,
    PROFILES,
    LevibotTransformer,
    count_flops,
)
from levibot_pipelines.settings import ModelSettings, Settings
from levibot_pipelines.usecases.evaluate import pipeline_budget, seed_estimate_s

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10):
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {
        "n": n,
        "gflops_best": round(2 * n**3 / min(times) / 1e9, 1),
        "gflops_median": round(2 * n**3 / statistics.median(times) / 1e9, 1),
    }


# --- today's path before issue 14, kept to measure "before" on the same weights -------------


def legacy_encode(model: LevibotTransformer, x: Tensor, mc: bool) -> Tensor:
    """``LevibotTransformer._encode`` before issue 14: ``F.dropout`` masks (one float drawn per
    element), dropout on the attention weights (SDPA's ``dropout_p``: the unfused math kernel
    on CPU), the input projection run on every repeated row, fp32."""
    p = model.config.dropout
    x = (x - model.feature_mean) / model.feature_std
    h = F.dropout(model.embed(x) + model.pos, p, training=mc)
    for i, block in enumerate(model.blocks):
        last = i == len(model.blocks) - 1
        attn, a_in = block.attn, block.ln_1(h)
        B, T, C = a_in.shape
        q, k, v = attn.qkv(a_in).split(C, dim=2)
        if last:
            q = q[:, -1:]
        # (B, L, C) -> (B, heads, L, C // heads)
        q, k, v = (
            t.view(B, -1, attn.n_heads, C // attn.n_heads).transpose(1, 2) for t in (q, k, v)
        )
        if last:
            att = (q @ k.transpose(-2, -1)) * (C // attn.n_heads) ** -0.5
            y = F.dropout(att.softmax(dim=-1), p, training=mc) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p if mc else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, -1, C)  # -> (B, L, C)
        h = (h[:, -1:] if last else h) + F.dropout(attn.proj(y), p, training=mc)
        mlp = block.mlp
        h = h + F.dropout(mlp.proj(F.gelu(mlp.fc(block.ln_2(h)))), p, training=mc)
    return model.ln_f(h[:, -1, :])


def legacy_forward(model: LevibotTransformer, x: Tensor, mc: bool) -> dict[str, Tensor]:
    """``LevibotTransformer.forward`` before issue 14 (``legacy_encode``)."""
    logit, mu, raw = model.head(legacy_encode(model, x, mc)).unbind(1)
    sigma = (F.softplus(raw) + 1e-6) * model.target_scale
    return {"logit": logit, "mu": mu * model.target_scale, "sigma": sigma}


def legacy_mc_predict(
    model: LevibotTransformer, x: Tensor, n_samples: int, chunk_size: int = 8192, seed: int = 0
) -> dict[str, np.ndarray]:
    """``mc_predict`` before issue 14: ``x`` repeated ``n_samples`` times, ``legacy_forward``."""
    check_mc_args(n_samples, chunk_size)
    out = {k: np.empty(x.shape[0]) for k in MC_KEYS}
    bars = max(1, chunk_size // n_samples)
    with torch.inference_mode(), seeded_rng(seed, x.device):
        for s in range(0, x.shape[0], bars):
            xc = x[s : s + bars]
            b = xc.shape[0]
            o = legacy_forward(model, xc.repeat(n_samples, 1, 1), mc=True)  # (n*b,) draw-major
            stats = summarise_draws(*(o[k].view(n_samples, b) for k in ("logit", "mu", "sigma")))
            for k in MC_KEYS:
                out[k][s : s + b] = stats[k]
    return out


class EagerReference(nn.Module):
    """The same architecture from stock parts: nn.TransformerEncoder (pre-norm, GELU)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.n_features, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.window, cfg.d_model))
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.d_ff,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 3)
        self.p = cfg.dropout

    def forward(self, x):
        h = F.dropout(self.embed(x) + self.pos, self.p, training=self.training)
        out = self.head(self.ln_f(self.encoder(h)[:, -1]))
        logit, mu, raw = out.unbind(1)
        return {"logit": logit, "mu": mu, "sigma": F.softplus(raw) + 1e-6}


# --- training ------------------------------------------------------------------------------


def _train_rate(params, forward, device, batch: int, steps: int) -> float:
    """Samples/s of ``steps`` AdamW steps (BCE + Gaussian NLL, clipping) after 2 warm-ups."""
    cfg = PROFILES["seed"]
    x = torch.randn(batch, cfg.window, cfg.n_features, device=device)
    y = (torch.rand(batch, device=device) > 0.5).float()
    r = torch.randn(batch, device=device)
    params = list(params)
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        out = forward(x)
        loss = F.binary_cross_entropy_with_logits(out["logit"], y) + F.gaussian_nll_loss(
            out["mu"], r, out["sigma"] ** 2, full=True
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def training_throughput(
    device: torch.device, precision: str, peaks: dict, batch: int = 256, steps: int = 6
) -> dict:
    """Seed-profile training rates: ours in ``precision`` and in fp32, today's (legacy) path,
    the stock ``nn.TransformerEncoder``; GFLOP/s against the matmul peak of the dtype used."""
    cfg = PROFILES["seed"]
    torch.manual_seed(0)
    ours = LevibotTransformer(cfg).to(device)
    ref = EagerReference(cfg).to(device).train()
    flops_per_sample = 3 * count_flops(cfg, 1)  # forward + backward ~ 3x forward
    rates = {
        "before": _train_rate(
            ours.parameters(), lambda x: legacy_forward(ours, x, True), device, batch, steps
        ),
        "fp32": _train_rate(
            ours.parameters(),
            lambda x: ours.set_precision("fp32")(x, mc=True),
            device,
            batch,
            steps,
        ),
    }
    if precision != "fp32":
        rates[precision] = _train_rate(
            ours.parameters(),
            lambda x: ours.set_precision(precision)(x, mc=True),
            device,
            batch,
            steps,
        )
    rates["eager_reference"] = _train_rate(ref.parameters(), ref, device, batch, steps)
    ours.set_precision("fp32")
    rate = rates[precision]
    gflops = rate * flops_per_sample / 1e9
    peak = peaks[precision]["gflops_best"]
    return {
        "batch": batch,
        "precision": precision,
        "flops_per_sample": flops_per_sample,
        "samples_per_s": round(rate, 1),
        "achieved_gflops": round(gflops, 1),
        "matmul_peak_gflops": peak,
        "fraction_of_matmul_peak": round(gflops / peak, 3),
        "fp32_samples_per_s": round(rates["fp32"], 1),
        "fp32_fraction_of_fp32_peak": round(
            rates["fp32"] * flops_per_sample / 1e9 / peaks["fp32"]["gflops_best"], 3
        ),
        "before_samples_per_s": round(rates["before"], 1),
        "speedup_vs_before": round(rate / rates["before"], 2),
        "eager_reference_samples_per_s": round(rates["eager_reference"], 1),
        "speedup_vs_eager": round(rate / rates["eager_reference"], 2),
        "target_fraction": 0.40,
        "target_speedup_vs_before": 4.0,
    }


# --- MC inference --------------------------------------------------------------------------


def _p50_ms(fn, repeats: int, device: torch.device) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - t0)
    return round(statistics.median(runs) * 1000, 2)


def mc_inference(
    device: torch.device,
    precision: str,
    symbols: int = 3,
    n_samples: int = ModelSettings().mc_samples,
    repeats: int = 15,
) -> dict:
    """p50 ms of MC dropout on ``symbols`` windows x ``n_samples`` draws (seed profile): today's
    batched pass before issue 14, ``mc_predict`` in fp32 and in ``precision``, the loop."""
    cfg = PROFILES["seed"]
    torch.manual_seed(0)
    model = LevibotTransformer(cfg).to(device)
    x = torch.randn(symbols, cfg.window, cfg.n_features, device=device)
    ms = {"before": _p50_ms(lambda: legacy_mc_predict(model, x, n_samples), repeats, device)}
    for p in dict.fromkeys(("fp32", precision)):
        model.set_precision(p)
        ms[p] = _p50_ms(lambda: model.mc_predict(x, n_samples=n_samples), repeats, device)
        ms[f"{p}_loop"] = _p50_ms(lambda: model.mc_predict_loop(x, n_samples), repeats, device)
    return {
        "symbols": symbols,
        "n_samples": n_samples,
        "precision": precision,
        "before_batched_p50_ms": ms["before"],
        "p50_ms": ms[precision],
        "fp32_p50_ms": ms["fp32"],
        "loop_p50_ms": ms[f"{precision}_loop"],
        "speedup_vs_before": round(ms["before"] / ms[precision], 2),
        "target_speedup_vs_before": 3.0,
        "met": ms["before"] / ms[precision] >= 3.0,
    }


# --- uncertainty before vs after on one trained model -----------------------------------------


def uncertainty_equivalence(precision: str, bars: int = 6000, n_test: int = 300) -> dict:
    """Train a seed-profile model briefly on one synthetic symbol, then MC-sample its test
    windows (T=50) with today's dropout placement (before) and the new one, fp32 and in
    ``precision``: PICP at 50/90% and the mean epistemic spreads. Two seeds each, so the
    seed-to-seed difference is reported beside the before/after one."""
    from levibot_pipelines.core.data.features import build_features
    from levibot_pipelines.core.data.synthetic import simulate_bars
    from levibot_pipelines.core.data.validation import validate_ohlcv
    from levibot_pipelines.core.data.windows import gather_windows, labeled_ends, window_ends
    from levibot_pipelines.core.evaluation.symbol_data import symbol_data
    from levibot_pipelines.core.metrics import picp
    from levibot_pipelines.core.models.transformer_training import fit_transformer

    tf = 900_000
    frames = [
        validate_ohlcv(
            simulate_bars(s, 0, (bars - 1) * tf, tf, seed=3), symbol=s, source="synthetic", tf_ms=tf
        ).bars
        for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    ]
    data = symbol_data(build_features(pl.concat(frames), tf_ms=tf, horizon=1), "BTCUSDT")
    cfg = PROFILES["seed"]
    ends = labeled_ends(window_ends(data.timestamps, cfg.window, tf), data.y_up, data.fwd_ret)
    n = len(ends)
    train, val, test = ends[: n - 1200], ends[n - 1000 : n - 500], ends[-n_test:]
    t0 = time.perf_counter()
    model, _ = fit_transformer(
        data.X, data.y_up, data.fwd_ret, train, val, cfg,
        epochs=2, max_train_samples=3000, seed=0, precision=precision,
    )  # fmt: skip
    fit_s = time.perf_counter() - t0
    x = torch.as_tensor(gather_windows(data.X, test, cfg.window))
    ret = data.fwd_ret[test]

    def summary(out: dict) -> dict:
        sigma = np.sqrt(out["total"])
        return {
            "picp_50": round(picp(ret, out["mu"], sigma, 0.5), 4),
            "picp_90": round(picp(ret, out["mu"], sigma, 0.9), 4),
            "mean_epistemic": float(f"{out['epistemic'].mean():.4g}"),
            "mean_epistemic_p": float(f"{out['epistemic_p'].mean():.4g}"),
        }

    runs = {}
    for seed in (0, 1):
        model.set_precision("fp32")
        runs[f"before_seed{seed}"] = summary(legacy_mc_predict(model, x, 50, seed=seed))
        runs[f"after_fp32_seed{seed}"] = summary(model.mc_predict(x, 50, seed=seed))
        model.set_precision(precision)
        runs[f"after_{precision}_seed{seed}"] = summary(model.mc_predict(x, 50, seed=seed))
    model.set_precision("fp32")
    before = runs["before_seed0"]
    after = runs[f"after_{precision}_seed0"]
    return {
        "fit_seconds": round(fit_s, 1),
        "test_windows": n_test,
        "runs": runs,
        "picp_90_difference": round(after["picp_90"] - before["picp_90"], 4),
        "epistemic_ratio_after_to_before": round(
            after["mean_epistemic"] / before["mean_epistemic"], 3
        ),
        "epistemic_p_ratio_after_to_before": round(
            after["mean_epistemic_p"] / before["mean_epistemic_p"], 3
        ),
        "tolerance": "|PICP difference| <= 0.02, epistemic ratios in [0.9, 1.1]",
    }


def precision_choice() -> dict:
    flags = cpu_flags()
    fp32_s, bf16_s = matmul_probe()
    return {
        "bf16_flags": [f for f in flags.split() if f in BF16_FLAGS],
        "probe_512_fp32_ms": round(fp32_s * 1000, 3),
        "probe_512_bf16_ms": round(bf16_s * 1000, 3),
        "auto_cpu": resolve_precision("auto", "cpu"),
    }


def mc_pass_size(precision: str, bars: int = 160, n_samples: int = 50) -> dict:
    """MC rows/s of the seed profile on ``bars`` windows x ``n_samples`` draws (a validation
    part's batch) with ``mc_predict``'s default pass (``MC_PASS_ELEMENTS``: 2 bars x 50 draws
    at the seed's sizes) against the 8,192-row passes used before."""
    cfg = PROFILES["seed"]
    torch.manual_seed(0)
    model = LevibotTransformer(cfg).set_precision(precision).eval()
    x = torch.randn(bars, cfg.window, cfg.n_features)
    rates = {}
    for name, chunk in (("default", None), ("before_8192", 8192)):
        model.mc_predict(x[:10], n_samples=n_samples, chunk_size=chunk)
        t0 = time.perf_counter()
        model.mc_predict(x, n_samples=n_samples, chunk_size=chunk)
        rates[name] = bars * n_samples / (time.perf_counter() - t0)
    return {
        "rows": bars * n_samples,
        "rows_per_pass": MC_PASS_ELEMENTS // (cfg.window * cfg.d_model),
        "rows_per_s": round(rates["default"]),
        "before_rows_per_s": round(rates["before_8192"]),
        "speedup": round(rates["default"] / rates["before_8192"], 2),
    }


def profile_choice(precision: str) -> dict:
    """What ``LEVIBOT_PROFILE=auto`` decides on this CPU with the defaults: the seed profile's
    measured throughput (``core.models.profile_choice.seed_throughput``, measured here, not
    kept), the estimated Transformer minutes of the pipeline's training of its symbols and of the
    demo's (``usecases.evaluate.seed_estimate_s``, what ``auto`` weighs), against their budgets
    (``LEVIBOT_TRAIN_BUDGET_MIN``; the demo's in ``DEMO_DEFAULTS``)."""
    from levibot_pipelines.cli import DEMO_DEFAULTS
    from levibot_pipelines.defs.resources import ModelResource

    speed = seed_throughput(precision)
    out = {
        "precision": precision,
        "seed_train_windows_per_s": round(speed.train_windows_per_s, 1),
        "seed_mc_rows_per_s": round(speed.forward_rows_per_s, 1),
    }
    for name, defaults in (("pipeline", {}), ("demo", DEMO_DEFAULTS)):
        # The configuration the pipeline (or the demo) trains with; `small` only so that building
        # it measures nothing: the estimate is of the seed profile at `speed`.
        env = {
            "LEVIBOT_HOME": tempfile.gettempdir(),
            "LEVIBOT_PRECISION": precision,
            "LEVIBOT_PROFILE": "small",
        }
        settings = Settings.from_env(env, defaults=defaults)
        m = settings.models
        _, cfg = ModelResource(settings).eval_config()
        budget = pipeline_budget(len(settings.market.symbols), m.report_folds, m.train_budget_min)
        estimate = seed_estimate_s(cfg, budget.fits, speed)
        out[name] = {
            "fits": budget.fits,
            "seed_estimate_min": round(estimate / 60, 1),
            "budget_min": m.train_budget_min,
            "auto_cpu": choose_cpu_profile(estimate, budget.seconds),
        }
    return out


def demo_training() -> dict:
    """Wall time and peak RSS of the demo's training (small profile, 3 symbols), measured on a
    fresh home in a child process: ingest + features + training_job for every symbol."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIBOT_")}
        env.update(
            LEVIBOT_HOME=home,
            LEVIBOT_REPORT_FOLDS="1",
            LEVIBOT_MC_SAMPLES="20",
            LEVIBOT_PROFILE="small",
            MLFLOW_DISABLE_TELEMETRY="true",
        )
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "levibot_pipelines.cli", "demo"],
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("levibot demo:")), "")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20), "summary": line}


def run_all(include_demo: bool = True, include_equivalence: bool = True) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(os.environ.get("LEVIBOT_PRECISION", "auto"), device.type)
    peaks = {p: matmul_peak(device, dtype) for p, dtype in DTYPES.items()}
    train = training_throughput(device, precision, peaks)
    mc = mc_inference(device, precision)
    out = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "precision": precision_choice() if device.type == "cpu" else precision,
        "matmul_peak": peaks,
        "seed_training": train,
        "mc_inference": mc,
        "mc_pass_size": mc_pass_size(precision),
        "profile_choice": profile_choice(precision) if device.type == "cpu" else "seed (CUDA)",
    }
    if include_equivalence:
        out["uncertainty_equivalence"] = uncertainty_equivalence(precision)
    if include_demo:
        out["demo_training"] = demo_training()
    return out


if __name__ == "__main__":
    import json

    print(
        json.dumps(
            run_all(
                include_demo="--no-demo" not in sys.argv,
                include_equivalence="--no-equivalence" not in sys.argv,
            ),
            indent=2,
        )
    )
