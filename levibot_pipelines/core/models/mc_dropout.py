"""MC-dropout statistics for ``LevibotTransformer.mc_predict`` (Gal & Ghahramani, 2016,
"Dropout as a Bayesian Approximation"): the argument checks, a private seeded RNG for the
draws, the dropout itself (``dropout``, with masks cut from 15-bit slices of int64 draws) and
the reduction of ``(n_samples, B)`` draws to per-bar means and variances.

Why a dropout of our own: ``torch.nn.functional.dropout`` draws one float per element through
``bernoulli_``, and on a CPU those draws were the largest single cost of training (a quarter of
a seed-profile step) and of MC inference. ``dropout`` takes four masks' worth of random bits
from each int64 of torch's generator (``random_``: 63 uniform bits), a fifth to a sixth of the
generator time, compares 15-bit integers with ``round(p * 2^15)`` in integer arithmetic and
multiplies (``masked_fill`` with a bool mask is several times slower on a CPU): the drop
probability is ``p`` to within ``2^-16`` (0.1 -> 3277 / 32768 = 0.100006) and the kept values
are scaled by ``1 / (1 - p')`` for that exact ``p'``, so the mean is unchanged. Same seed,
same masks. A dropout of 2.5M elements: 3 ms instead of 10-17 ms (one CPU thread).
"""

from __future__ import annotations

import math
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


_BITS = 15  # random bits per mask element: 4 elements from each 63-bit int64 draw


def dropout_mask(
    shape: tuple[int, ...], p: float, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """``shape`` tensor of ``dtype``: 0 where an element is dropped, each independently with
    probability ``p' = round(p * 2^15) / 2^15``, else ``1 / (1 - p')``; from torch's (seeded)
    generator of ``device``. ``ValueError`` unless ``0 <= p' < 1``."""
    threshold = round(p * 2**_BITS)
    if not (0.0 <= p < 1.0 and threshold < 2**_BITS):
        raise ValueError(f"dropout p must be in [0, 1 - 2^-16), got {p}")
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()  # 63 bits
    # (ceil(n / 4),) int64 -> (n,) int16; the low 15 bits of every int16 are uniform (the top
    # int16's sign bit is always 0, the mask clears it): 0 <= bits < 2^15
    bits = words.view(torch.int16)[:n] & (2**_BITS - 1)
    # bits - threshold < 0 exactly for a dropped element: >> 15 gives -1 there, else 0; + 1
    # gives 0 (drop) or 1 (keep), integer ops all (a bool mask converts and multiplies slower)
    keep = bits.sub_(threshold).bitwise_right_shift_(_BITS).add_(1)
    return keep.view(shape).to(dtype).mul_(1.0 / (1.0 - threshold / 2**_BITS))


def dropout(x: Tensor, p: float, active: bool) -> Tensor:
    """Inverted dropout of ``x`` (any shape) with probability ``p`` in [0, 1) when ``active``
    (training and MC sampling), else ``x`` itself: ``x * dropout_mask(...)`` (autograd saves
    the mask, so the gradient is ``grad * mask``)."""
    if not active or p == 0.0:
        return x
    return x * dropout_mask(tuple(x.shape), p, x.dtype, x.device)


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
