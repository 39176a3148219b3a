"""MC-dropout statistics for ``LevibotTransformer.mc_predict`` (Gal & Ghahramani, 2016,
"Dropout as a Bayesian Approximation"): the argument checks, a private seeded RNG for the
draws, and the reduction of ``(n_samples, B)`` draws to per-bar means and variances.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from levibot_pipelines.core.checks import check_min

MC_KEYS: tuple[str, ...] = (
    "p_up",
    "mu",
    "aleatoric",
    "epistemic",
    "epistemic_p",
    "total",
    "confidence",
)


def check_mc_args(n_samples: int, chunk_size: int) -> None:
    """``ValueError`` unless ``n_samples >= 1`` draws and ``chunk_size >= 1`` rows a pass."""
    check_min("n_samples", n_samples, 1)
    check_min("chunk_size", chunk_size, 1)


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the RNG of ``device`` for the block and restore the caller's state afterwards."""
    devices = [] if device.type == "cpu" else [device]
    device_type = "cuda" if device.type == "cpu" else device.type
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        torch.manual_seed(seed)
        yield


def summarise_draws(logit: Tensor, mu: Tensor, sigma: Tensor) -> dict[str, np.ndarray]:
    """Draws ``(n, B)`` -> MC statistics ``(B,)``; float64, so identical draws give variance 0."""
    logit, mu, sigma = logit.double(), mu.double(), sigma.double()
    p = torch.sigmoid(logit)
    p_up, mu_mean = p.mean(dim=0), mu.mean(dim=0)
    aleatoric = (sigma**2).mean(dim=0)
    epistemic = ((mu - mu_mean) ** 2).mean(dim=0)
    epistemic_p = ((p - p_up) ** 2).mean(dim=0)
    # The rule of ``core.models.inference.transformer_confidence`` (the margin ``|2p - 1|``
    # shrunk as the draws disagree), here on the raw MC-mean p in float64 torch; inference
    # applies it again to the calibrated p. Not shared: inference depends on this module, and
    # torch keeps the numbers.
    confidence = (2 * p_up - 1).abs() * (1 - 2 * epistemic_p.sqrt()).clamp(0.0, 1.0)
    stats = {
        "p_up": p_up,
        "mu": mu_mean,
        "aleatoric": aleatoric,
        "epistemic": epistemic,
        "epistemic_p": epistemic_p,
        "total": aleatoric + epistemic,
        "confidence": confidence,
    }
    return {k: v.cpu().numpy() for k, v in stats.items()}
