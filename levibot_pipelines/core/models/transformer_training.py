"""Training and batch prediction for ``core.models.transformer.LevibotTransformer``.

Windows are gathered per batch with ``core.data.windows.gather_windows`` (the same function live
prediction uses), so the full ``(n_windows, T, F)`` tensor is never built. The window ending at
row ``i`` is trained against ``y_up[i]`` and ``fwd_ret[i]`` (close(i) -> close(i + h)).

Loss per window: ``BCE(logit, y_up) + GaussianNLL(fwd_ret / s; mu / s, var = (sigma / s)^2)``,
with ``s`` the target scale and the NLL from ``torch.nn.functional.gaussian_nll_loss(full=True)``
(plain Gaussian NLL, not beta-NLL). The feature standardisation and ``s`` are fitted on the
training windows only and stored in the model's buffers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from levibot_pipelines.core.checks import check_int_array, check_min
from levibot_pipelines.core.data.windows import gather_windows
from levibot_pipelines.core.models.mc_dropout import MC_KEYS
from levibot_pipelines.core.models.transformer import LevibotTransformer, TransformerConfig

logger = logging.getLogger(__name__)


def covered_rows(n: int, ends: np.ndarray, length: int) -> np.ndarray:
    """``(n,)`` bool mask of rows inside at least one window of ``length`` ending at ``ends``."""
    ends = np.asarray(ends, dtype=np.int64)
    # +1 where a window starts, -1 after it ends; a running sum > 0 marks covered rows.
    delta = np.bincount(ends - length + 1, minlength=n + 1) - np.bincount(ends + 1, minlength=n + 1)
    return np.cumsum(delta)[:n] > 0  # (n + 1,) -> (n,)


def fit_scaler(X: np.ndarray, ends: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (ddof=0) over the rows covered by the windows ending at ``ends``.

    Each covered row counts once however many windows contain it. A constant feature gets std 1.
    Returns two float64 ``(F,)`` arrays.
    """
    rows = X[covered_rows(X.shape[0], ends, length)].astype(np.float64)
    mean, std = rows.mean(axis=0), rows.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def fit_transformer(
    X: np.ndarray,
    y_up: np.ndarray,
    fwd_ret: np.ndarray,
    train_ends: np.ndarray,
    val_ends: np.ndarray,
    config: TransformerConfig,
    *,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 3,
    max_train_samples: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[LevibotTransformer, list[dict]]:
    """Fit a transformer with AdamW, gradient clipping at 1.0 and early stopping.

    Args:
        X: ``(n, F)`` float32 feature rows of one symbol, time-ordered.
        y_up: ``(n,)`` direction labels in {0, 1}; fwd_ret: ``(n,)`` forward log returns. Both
            must be finite at every train/val end (see ``windows.labeled_ends``).
        train_ends, val_ends: window ends (``windows.window_ends``); val must come after a purge.
        config: model size; ``config.window`` is the window length.
        epochs: maximum epochs (default 10). patience: epochs without a lower validation loss
            before stopping (default 3); the best epoch's weights are restored.
        max_train_samples: if set, each epoch trains on a fresh seeded random subset of this many
            train windows (default: all, shuffled).
        seed: seeds ``torch.manual_seed`` (init, dropout) and the numpy batch order; training is
            deterministic on CPU.
        on_epoch: called with each epoch's history dict.

    Returns:
        (model on ``device`` with the best validation loss, history) where history has one dict
        per epoch: epoch, train_loss, val_loss, val_bce, val_nll, val_acc, train_samples,
        seconds (whole epoch incl. validation), samples_per_s (train windows per second of the
        training phase).
    """
    X, y_up, fwd_ret = _check_arrays(X, y_up, fwd_ret, config)
    train_ends = _check_ends(train_ends, "train_ends", X, y_up, fwd_ret, config)
    val_ends = _check_ends(val_ends, "val_ends", X, y_up, fwd_ret, config)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("patience", patience)):
        check_min(name, value, 1)
    if max_train_samples is not None and max_train_samples < 1:
        raise ValueError(f"max_train_samples must be >= 1 or None, got {max_train_samples}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = LevibotTransformer(config)
    mean, std = fit_scaler(X, train_ends, config.window)
    target_std = float(np.std(fwd_ret[train_ends]))
    model.set_scaling(mean, std, target_std if target_std > 0 else 1.0)
    model.to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]  # weights; not biases or LayerNorm
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    n_epoch = (
        len(train_ends) if max_train_samples is None else min(max_train_samples, len(train_ends))
    )
    history: list[dict] = []
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        order = rng.choice(train_ends, size=n_epoch, replace=False)
        total = 0.0
        for s in range(0, n_epoch, batch_size):
            ends = order[s : s + batch_size]
            x, y, r = _batch(X, y_up, fwd_ret, ends, config.window, device)
            loss, _, _, _ = _loss(model, x, y, r, mc=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += loss.item() * len(ends)
        train_seconds = time.perf_counter() - t0
        val = evaluate_loss(model, X, y_up, fwd_ret, val_ends, batch_size=max(batch_size, 1024))
        record = {
            "epoch": epoch,
            "train_loss": total / n_epoch,
            "val_loss": val["loss"],
            "val_bce": val["bce"],
            "val_nll": val["nll"],
            "val_acc": val["acc"],
            "train_samples": n_epoch,
            "seconds": time.perf_counter() - t0,
            "samples_per_s": n_epoch / train_seconds,
        }
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch is not None:
            on_epoch(record)
        if val["loss"] < best_loss:
            best_loss, stale = val["loss"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), history


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
            x, y, r = _batch(X, y_up, fwd_ret, b, model.config.window, device)
            parts = _loss(model, x, y, r, mc=False)
            sums += np.array([p.item() for p in parts]) * len(b)
    loss, bce, nll, acc = sums / len(ends)
    return {"loss": float(loss), "bce": float(bce), "nll": float(nll), "acc": float(acc)}


def predict(
    model: LevibotTransformer,
    X: np.ndarray,
    ends: np.ndarray,
    *,
    n_samples: int = 0,
    batch_size: int = 4096,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Predict the windows ending at ``ends`` (``(m,)`` rows of ``X`` ``(n, F)``).

    ``n_samples=0``: deterministic outputs ``p_up``, ``mu``, ``sigma`` (``(m,)`` float64).
    ``n_samples>0``: ``LevibotTransformer.mc_predict`` outputs, ``batch_size`` bars gathered at a
    time (each MC pass is chunked by ``mc_predict``'s default ``chunk_size``); ``seed`` seeds the
    dropout draws of each batch.
    """
    check_min("n_samples", n_samples, 0)
    check_min("batch_size", batch_size, 1)
    ends = np.asarray(ends, dtype=np.int64)
    keys = ("p_up", "mu", "sigma") if n_samples == 0 else None
    device = model.target_scale.device
    parts: list[dict[str, np.ndarray]] = []
    for s in range(0, len(ends), batch_size):
        xb = gather_windows(X, ends[s : s + batch_size], model.config.window)
        x = torch.as_tensor(xb, dtype=torch.float32, device=device)
        if n_samples > 0:
            parts.append(model.mc_predict(x, n_samples=n_samples, seed=seed))
            continue
        with torch.inference_mode():
            out = model(x, mc=False)
        parts.append({k: out[k].double().cpu().numpy() for k in keys})
    if not parts:
        return {k: np.empty(0) for k in keys or MC_KEYS}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _batch(
    X: np.ndarray, y_up: np.ndarray, fwd_ret: np.ndarray, ends: np.ndarray, length: int, device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows ``(b, T, F)`` and their labels ``(b,)`` for the ends of one batch."""
    x = torch.as_tensor(gather_windows(X, ends, length), dtype=torch.float32, device=device)
    y = torch.as_tensor(y_up[ends], dtype=torch.float32, device=device)
    r = torch.as_tensor(fwd_ret[ends], dtype=torch.float32, device=device)
    return x, y, r


def _loss(
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


def _check_arrays(
    X: np.ndarray, y_up: np.ndarray, fwd_ret: np.ndarray, config: TransformerConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != config.n_features:
        raise ValueError(f"X must have shape (n, {config.n_features}), got {X.shape}")
    y_up, fwd_ret = np.asarray(y_up, np.float64), np.asarray(fwd_ret, np.float64)
    for name, arr in (("y_up", y_up), ("fwd_ret", fwd_ret)):
        if arr.shape != (X.shape[0],):
            raise ValueError(f"{name} must have shape ({X.shape[0]},), got {arr.shape}")
    return X, y_up, fwd_ret


def _check_ends(
    ends: np.ndarray,
    name: str,
    X: np.ndarray,
    y_up: np.ndarray,
    fwd_ret: np.ndarray,
    config: TransformerConfig,
) -> np.ndarray:
    ends = check_int_array(ends, name)
    if ends.min() < config.window - 1 or ends.max() >= X.shape[0]:
        raise ValueError(
            f"{name} must lie in [{config.window - 1}, {X.shape[0] - 1}] "
            f"(window={config.window}), got [{ends.min()}, {ends.max()}]"
        )
    bad_y = int(np.sum(~np.isin(y_up[ends], (0.0, 1.0))))
    bad_r = int(np.sum(~np.isfinite(fwd_ret[ends])))
    if bad_y or bad_r:
        raise ValueError(
            f"{name}: y_up is not 0/1 at {bad_y} ends and fwd_ret is not finite at {bad_r} ends; "
            "drop unlabeled rows with windows.labeled_ends"
        )
    bad_x = int(np.sum(~np.isfinite(X[covered_rows(X.shape[0], ends, config.window)])))
    if bad_x:
        raise ValueError(f"{name}: X has {bad_x} non-finite values inside the windows")
    return ends
