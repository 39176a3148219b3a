"""Training and batch prediction for ``core.models.transformer.LevibotTransformer``.

Windows are gathered per batch with ``core.data.windows.gather_windows`` (the same function live
prediction uses), so the full ``(n_windows, T, F)`` tensor is never built. The window ending at
row ``i`` is trained against ``y_up[i]`` and ``fwd_ret[i]`` (close(i) -> close(i + h)).

The loss (BCE of the direction plus the Gaussian NLL of the return) and the validation loss are
in ``core.models.transformer_loss``. The feature standardisation and the target scale are fitted
on the training windows only and stored in the model's buffers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from levibot_pipelines.core.checks import check_min
from levibot_pipelines.core.data.windows import (
    check_training_arrays,
    check_training_ends,
    covered_rows,
    gather_windows,
)
from levibot_pipelines.core.models.mc_dropout import MC_KEYS
from levibot_pipelines.core.models.transformer import LevibotTransformer, TransformerConfig
from levibot_pipelines.core.models.transformer_loss import (
    batch_tensors,
    evaluate_loss,
    loss_terms,
)

logger = logging.getLogger(__name__)


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
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 3,
    max_train_samples: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[LevibotTransformer, list[dict]]:
    """Fit a transformer with AdamW, gradient clipping at 1.0 and early stopping.

    Args:
        X: ``(n, F)`` float32 feature rows of one symbol, time-ordered.
        y_up: ``(n,)`` direction labels in {0, 1}; fwd_ret: ``(n,)`` forward log returns. Both
            must be finite at every train/val end (see ``windows.labeled_ends``).
        train_ends, val_ends: window ends (``windows.window_ends``); val must come after a purge.
        config: model size; ``config.window`` is the window length.
        epochs: maximum epochs, >= 1 (no default: the caller passes the configured
            ``LEVIBOT_EPOCHS``). patience: epochs without a lower validation loss
            before stopping (default 3); the best epoch's weights are restored.
        max_train_samples: if set, each epoch trains on a fresh seeded random subset of this many
            train windows (default: all, shuffled).
        seed: seeds ``torch.manual_seed`` (init, dropout) and the numpy batch order; training is
            deterministic on CPU.
        precision: ``"fp32"`` (default) or ``"bf16"`` (autocast, ``core.models.precision``): the
            precision of every forward pass, kept by the returned model for its MC inference.
        on_epoch: called with each epoch's history dict.

    Returns:
        (model on ``device`` with the best validation loss, history) where history has one dict
        per epoch: epoch, train_loss, val_loss, val_bce, val_nll, val_acc, train_samples,
        seconds (whole epoch incl. validation), samples_per_s (train windows per second of the
        training phase).
    """
    X, y_up, fwd_ret = check_training_arrays(X, y_up, fwd_ret, config.n_features)
    train_ends = check_training_ends(train_ends, "train_ends", X, y_up, fwd_ret, config.window)
    val_ends = check_training_ends(val_ends, "val_ends", X, y_up, fwd_ret, config.window)
    schedule = _Schedule(epochs, batch_size, lr, weight_decay, patience, max_train_samples, seed)
    torch.manual_seed(seed)
    model = _scaled_model(X, fwd_ret, train_ends, config).to(device).set_precision(precision)
    data = _Data(X, y_up, fwd_ret, train_ends, val_ends)
    return model.eval(), _train_epochs(model, data, schedule, on_epoch)


class _Data(NamedTuple):
    """Checked inputs of ``fit_transformer``: ``X`` (n, F) float32, ``y_up`` and ``fwd_ret``
    (n,) float64, the window ends ``train_ends`` and ``val_ends`` (int64)."""

    X: np.ndarray
    y_up: np.ndarray
    fwd_ret: np.ndarray
    train_ends: np.ndarray
    val_ends: np.ndarray


@dataclass(frozen=True)
class _Schedule:
    """The optimisation settings of ``fit_transformer`` (arguments of the same names); raises
    ``ValueError`` unless epochs, batch_size and patience are >= 1, max_train_samples is None
    or >= 1 and lr > 0."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    max_train_samples: int | None
    seed: int

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience"):
            check_min(name, getattr(self, name), 1)
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(
                f"max_train_samples must be >= 1 or None, got {self.max_train_samples}"
            )
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def optimizer(self, model: LevibotTransformer) -> torch.optim.AdamW:
        """AdamW at ``lr``, ``weight_decay`` on the weight matrices only (not biases or
        LayerNorm)."""
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.lr)


def _scaled_model(
    X: np.ndarray, fwd_ret: np.ndarray, train_ends: np.ndarray, config: TransformerConfig
) -> LevibotTransformer:
    """A freshly initialised model (from torch's global RNG) holding the feature scaler fitted
    on the training windows and the target scale ``std(fwd_ret[train_ends])`` (1 if 0)."""
    model = LevibotTransformer(config)
    mean, std = fit_scaler(X, train_ends, config.window)
    target_std = float(np.std(fwd_ret[train_ends]))
    model.set_scaling(mean, std, target_std if target_std > 0 else 1.0)
    return model


def _train_epochs(
    model: LevibotTransformer,
    data: _Data,
    schedule: _Schedule,
    on_epoch: Callable[[dict], None] | None,
) -> list[dict]:
    """Train up to ``schedule.epochs`` epochs, each on a seeded random draw of the train ends
    (all of them, or ``max_train_samples``), stopping after ``patience`` epochs without a
    lower validation loss; the best epoch's weights are loaded back. Returns the history, one
    record per epoch run (see ``fit_transformer``)."""
    n_train = len(data.train_ends)
    cap = schedule.max_train_samples
    n_epoch = n_train if cap is None else min(cap, n_train)
    opt = schedule.optimizer(model)
    rng = np.random.default_rng(schedule.seed)
    history: list[dict] = []
    best_loss, best_state, stale = float("inf"), None, 0
    for epoch in range(1, schedule.epochs + 1):
        t0 = time.perf_counter()
        order = rng.choice(data.train_ends, size=n_epoch, replace=False)
        record = {"epoch": epoch, **_run_epoch(model, opt, data, order, schedule.batch_size, t0)}
        history.append(record)
        logger.info("epoch %d: %s", epoch, record)
        if on_epoch is not None:
            on_epoch(record)
        if record["val_loss"] < best_loss:
            best_loss, stale = record["val_loss"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= schedule.patience:
                break
    model.load_state_dict(best_state)
    return history


def _run_epoch(
    model: LevibotTransformer,
    opt: torch.optim.Optimizer,
    data: _Data,
    order: np.ndarray,
    batch_size: int,
    t0: float,
) -> dict:
    """One pass over the train windows ending at ``order`` (in that order, ``batch_size`` at a
    time, gradients clipped at norm 1.0), then the validation loss. Returns the history
    record without ``epoch``; ``t0``: the epoch's start (``time.perf_counter``)."""
    X, y_up, fwd_ret = data.X, data.y_up, data.fwd_ret
    device = model.target_scale.device
    total = 0.0
    for s in range(0, len(order), batch_size):
        ends = order[s : s + batch_size]
        x, y, r = batch_tensors(X, y_up, fwd_ret, ends, model.config.window, device)
        loss, _, _, _ = loss_terms(model, x, y, r, mc=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        total += loss.item() * len(ends)
    train_seconds = time.perf_counter() - t0
    val = evaluate_loss(model, X, y_up, fwd_ret, data.val_ends, batch_size=max(batch_size, 1024))
    n = len(order)
    return {
        "train_loss": total / n,
        **{f"val_{k}": v for k, v in val.items()},  # val_loss, val_bce, val_nll, val_acc
        "train_samples": n,
        "seconds": time.perf_counter() - t0,
        "samples_per_s": n / train_seconds,
    }


def predict(
    model: LevibotTransformer,
    X: np.ndarray,
    ends: np.ndarray,
    *,
    n_samples: int,
    batch_size: int = 4096,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Predict the windows ending at ``ends`` (``(m,)`` rows of ``X`` ``(n, F)``).

    ``n_samples`` (no default: callers pass the configured MC sample count, setting
    ``LEVIBOT_MC_SAMPLES``): 0 gives the deterministic outputs ``p_up``, ``mu``, ``sigma``
    (``(m,)`` float64); > 0 the ``LevibotTransformer.mc_predict`` outputs, ``batch_size`` bars
    gathered at a time (each MC pass is chunked by ``mc_predict``'s default ``chunk_size``);
    ``seed`` seeds the dropout draws of each batch.
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
