"""The training objective of ``core.models.transformer.LevibotTransformer``.

Loss per window: ``BCE(logit, y_up) + GaussianNLL(fwd_ret / s; mu / s, var = (sigma / s)^2)``,
with ``s`` the target scale and the NLL from ``torch.nn.functional.gaussian_nll_loss(full=True)``
(plain Gaussian NLL, not beta-NLL). The window ending at row ``i`` is scored against ``y_up[i]``
and ``fwd_ret[i]`` (close(i) -> close(i + h)); windows are gathered per batch with
``core.data.windows.gather_windows``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from levibot_pipelines.core.data.windows import gather_windows
from levibot_pipelines.core.models.transformer import LevibotTransformer


def evaluate_loss(
    model: LevibotTransformer,
    X: np.ndarray,
    y_up: np.ndarray,
    fwd_ret: np.ndarray,
    ends: np.ndarray,
    *,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Deterministic (``mc=False``) mean loss over the windows ending at ``ends``.

    Returns loss (= bce + nll), bce, nll (Gaussian, scaled units, ``full=True``) and acc
    (accuracy of ``p_up > 0.5`` against ``y_up``).
    """
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size == 0:
        raise ValueError("ends is empty: no windows to evaluate")
    device = model.target_scale.device
    sums = np.zeros(4)
    with torch.inference_mode():
        for s in range(0, len(ends), batch_size):
            b = ends[s : s + batch_size]
            x, y, r = batch_tensors(X, y_up, fwd_ret, b, model.config.window, device)
            parts = loss_terms(model, x, y, r, mc=False)
            sums += np.array([p.item() for p in parts]) * len(b)
    loss, bce, nll, acc = sums / len(ends)
    return {"loss": float(loss), "bce": float(bce), "nll": float(nll), "acc": float(acc)}


def batch_tensors(
    X: np.ndarray, y_up: np.ndarray, fwd_ret: np.ndarray, ends: np.ndarray, length: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows ``(b, T, F)`` and their labels ``(b,)`` for the ends of one batch."""
    x = torch.as_tensor(gather_windows(X, ends, length), dtype=torch.float32, device=device)
    y = torch.as_tensor(y_up[ends], dtype=torch.float32, device=device)
    r = torch.as_tensor(fwd_ret[ends], dtype=torch.float32, device=device)
    return x, y, r


def loss_terms(
    model: LevibotTransformer, x: torch.Tensor, y: torch.Tensor, r: torch.Tensor, mc: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (bce + nll, bce, nll, accuracy), means over the batch, returns in scaled units."""
    out = model(x, mc=mc)
    scale = model.target_scale
    bce = F.binary_cross_entropy_with_logits(out["logit"], y)
    sigma = out["sigma"] / scale
    nll = F.gaussian_nll_loss(out["mu"] / scale, r / scale, sigma**2, full=True)
    acc = ((out["logit"] > 0).float() == y).float().mean()
    return bce + nll, bce, nll, acc
