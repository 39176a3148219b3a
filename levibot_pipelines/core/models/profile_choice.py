"""Which Transformer profile ``LEVIBOT_PROFILE=auto`` trains on a CPU: the seed's architecture
(``seed``) where this machine trains it within the training budget, else ``small``.

The decision is arithmetic on two measured rates of the seed profile on this machine, in the
precision it will run in (``seed_throughput``: training windows/s and MC-dropout rows/s), and
on the work the configuration asks for (``training_work``): every Transformer fit of the job
trains ``epochs`` x the windows drawn per epoch, runs the validation windows forward once per
epoch, then samples the val, calib and test rows ``mc_samples`` times each. Early stopping
can only shorten that, so the estimate is an upper bound of the Transformer's compute (the
LightGBM fits, the features and the backtests come on top and are small next to it). On a GPU
``auto`` is always ``seed`` (``transformer.resolve_profile``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from levibot_pipelines.core.models.transformer import PROFILES, LevibotTransformer
from levibot_pipelines.core.models.transformer_loss import loss_terms


@dataclass(frozen=True)
class TrainingWork:
    """What a job asks of the Transformer: ``fits`` fits, each training ``train_windows``
    windows (all epochs) and running ``forward_rows`` rows without gradients (validation loss
    and MC draws)."""

    fits: int
    train_windows: int
    forward_rows: int


@dataclass(frozen=True)
class Throughput:
    """The seed profile's measured rates on this machine: training windows/s (forward,
    backward and AdamW step at batch 256) and MC-dropout rows/s (one row = one window x one
    draw)."""

    train_windows_per_s: float
    forward_rows_per_s: float

    def __post_init__(self) -> None:
        for name in ("train_windows_per_s", "forward_rows_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive rate, got {value!r}")


def training_work(
    *,
    fits: int,
    epochs: int,
    train: int,
    val: int,
    calib: int,
    test: int,
    max_train_samples: int | None,
    mc_samples: int,
) -> TrainingWork:
    """The work of ``fits`` Transformer fits on the walk-forward layout ``train, val, calib,
    test`` (bars), with ``epochs`` epochs of ``min(train, max_train_samples)`` windows (all
    ``train`` when ``max_train_samples`` is None) and ``mc_samples`` MC draws per scored row.

    >>> training_work(fits=12, epochs=4, train=20000, val=3000, calib=3000, test=4000,
    ...               max_train_samples=8000, mc_samples=50)
    TrainingWork(fits=12, train_windows=32000, forward_rows=512000)
    """
    for name, value in (("fits", fits), ("epochs", epochs), ("mc_samples", mc_samples)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    per_epoch = train if max_train_samples is None else min(train, max_train_samples)
    forward = epochs * val + (val + calib + test) * mc_samples
    return TrainingWork(fits=fits, train_windows=epochs * per_epoch, forward_rows=forward)


def estimated_seconds(work: TrainingWork, speed: Throughput) -> float:
    """Seconds the Transformer part of ``work`` takes at ``speed`` (one fit after another).

    >>> estimated_seconds(TrainingWork(12, 32000, 512000), Throughput(1000.0, 4000.0))
    1920.0
    """
    per_fit = work.train_windows / speed.train_windows_per_s
    per_fit += work.forward_rows / speed.forward_rows_per_s
    return work.fits * per_fit


def choose_cpu_profile(estimate_s: float, budget_s: float) -> str:
    """``"seed"`` when the seed profile's estimated seconds fit ``budget_s``, else ``"small"``."""
    if not budget_s > 0:
        raise ValueError(f"the training budget must be positive seconds, got {budget_s}")
    return "seed" if estimate_s <= budget_s else "small"


def seed_throughput(precision: str, batch: int = 256, steps: int = 2, mc_bars: int = 20):
    """Measure ``Throughput`` of a freshly initialised seed-profile model on the CPU in
    ``precision`` (``"fp32"`` or ``"bf16"``) on random inputs: ``steps`` training steps of
    ``batch`` windows and one MC pass of ``mc_bars`` windows x 50 draws, each after one
    warm-up. About 2 s on 2 cores in bf16, 4 s in fp32. The global RNG is left as it was."""
    cfg = PROFILES["seed"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LevibotTransformer(cfg).set_precision(precision)
        x = torch.randn(batch, cfg.window, cfg.n_features)
        y = (torch.rand(batch) > 0.5).float()
        r = torch.randn(batch) * 0.01
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step() -> None:
            loss = loss_terms(model, x, y, r, mc=True)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step()
        train_rate = batch * steps / (time.perf_counter() - t0)
        model.eval()
        xm = x[:mc_bars]
        model.mc_predict(xm, n_samples=50)
        t0 = time.perf_counter()
        model.mc_predict(xm, n_samples=50)
        mc_rate = mc_bars * 50 / (time.perf_counter() - t0)
    return Throughput(train_rate, mc_rate)
