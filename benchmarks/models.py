"""Model benchmarks (issue: models): CPU/GPU fp32 matmul peak, seed-profile training throughput
against a plain ``nn.TransformerEncoder`` of the same architecture, batched MC dropout against a
loop of T passes, and the demo's training wall time and peak memory."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn
from torch.nn import functional as F

from levibot_pipelines.core.models.transformer import PROFILES, LevibotTransformer, count_flops
from levibot_pipelines.settings import ModelSettings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 2048, repeats: int = 20) -> dict:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "n": n,
        "gflops_best": round(2 * n**3 / best / 1e9, 1),
        "gflops_median": round(2 * n**3 / statistics.median(times) / 1e9, 1),
    }


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


def _train_rate(model, forward, device, batch: int, steps: int) -> float:
    cfg = PROFILES["seed"]
    x = torch.randn(batch, cfg.window, cfg.n_features, device=device)
    y = (torch.rand(batch, device=device) > 0.5).float()
    r = torch.randn(batch, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = forward(x)
        loss = F.binary_cross_entropy_with_logits(out["logit"], y) + F.gaussian_nll_loss(
            out["mu"], r, out["sigma"] ** 2, full=True
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t0)


def training_throughput(device: torch.device, batch: int = 256, steps: int = 10) -> dict:
    cfg = PROFILES["seed"]
    torch.manual_seed(0)
    ours = LevibotTransformer(cfg).to(device)
    ref = EagerReference(cfg).to(device).train()
    ours_rate = _train_rate(ours, lambda x: ours(x, mc=True), device, batch, steps)
    ref_rate = _train_rate(ref, ref, device, batch, steps)
    flops_per_sample = 3 * count_flops(cfg, 1)  # forward + backward ~ 3x forward
    return {
        "batch": batch,
        "samples_per_s": round(ours_rate, 1),
        "achieved_gflops": round(ours_rate * flops_per_sample / 1e9, 1),
        "flops_per_sample": flops_per_sample,
        "eager_reference_samples_per_s": round(ref_rate, 1),
        "speedup_vs_eager": round(ours_rate / ref_rate, 2),
    }


def mc_inference(
    device: torch.device,
    symbols: int = 3,
    n_samples: int = ModelSettings().mc_samples,
    repeats: int = 20,
):
    cfg = PROFILES["seed"]
    torch.manual_seed(0)
    model = LevibotTransformer(cfg).to(device)
    x = torch.randn(symbols, cfg.window, cfg.n_features, device=device)
    timings = {}
    for name, fn in (("batched", model.mc_predict), ("loop", model.mc_predict_loop)):
        fn(x, n_samples=n_samples)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x, n_samples=n_samples)
            _sync(device)
            runs.append(time.perf_counter() - t0)
        timings[name] = statistics.median(runs)
    return {
        "symbols": symbols,
        "n_samples": n_samples,
        "batched_p50_ms": round(timings["batched"] * 1000, 2),
        "loop_p50_ms": round(timings["loop"] * 1000, 2),
        "speedup": round(timings["loop"] / timings["batched"], 2),
        "target_speedup": 5.0,
        "met": timings["loop"] / timings["batched"] >= 5.0,
    }


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


def run_all(include_demo: bool = True) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = matmul_peak(device)
    train = training_throughput(device)
    train["fraction_of_matmul_peak"] = round(train["achieved_gflops"] / peak["gflops_best"], 3)
    train["target_fraction"] = 0.40
    train["target_speedup_vs_eager"] = 2.0
    train["met"] = train["fraction_of_matmul_peak"] >= 0.40 and train["speedup_vs_eager"] >= 2.0
    out = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak": peak,
        "seed_training": train,
        "mc_inference": mc_inference(device),
    }
    if include_demo:
        out["demo_training"] = demo_training()
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(include_demo="--no-demo" not in sys.argv), indent=2))
