"""Deep model: a small pre-norm transformer encoder over a window of bars, with MC dropout.

A window of ``T`` bars x ``F`` features (``core.data.windows``) -> ``Linear(F, d_model)`` + learned
positional embedding -> ``n_layers`` pre-norm blocks (multi-head self-attention + GELU MLP) ->
LayerNorm -> the last bar's token -> three heads: ``logit`` (``p_up = sigmoid(logit)``), ``mu``
and ``sigma = softplus(.) + 1e-6`` (a Gaussian over the forward log return). Only the last token
reaches the heads, so the last block computes its query, residual and MLP for that token alone
(keys and values still cover the whole window): exactly the full computation, with less work.

MC dropout (Gal & Ghahramani, 2016, "Dropout as a Bayesian Approximation") without
``model.train()``: every dropout is functional (``core.models.mc_dropout.dropout``) and switched
by the ``mc`` argument of ``forward``, so the module's train/eval flag is irrelevant and
``mc=False`` is deterministic. Dropout acts after the embedding, on the attention's output
(after its projection) and after the MLP; not on the attention weights (since issue 14: a mask
4x larger than the others at the seed's sizes, and no fused attention kernel with it; the
uncertainty estimate of a fixed model is unchanged, ``test_transformer_speed``). The MC draws
share one input projection per window (it comes before the first dropout). Input
standardisation and the target scale are buffers, so a saved ``state_dict`` plus the config JSON
rebuilds the whole predictor (the parameter names are those of every model saved so far);
weights travel through ``torch.save``/``torch.load(weights_only=True)`` and nothing is ever
unpickled. The MC statistics (seeded draws, reduction to means and variances) are in
``core.models.mc_dropout``; the precision (fp32 or bf16 autocast) in ``core.models.precision``.

Size: about 370 lines, kept as one model file (config, modules, the model's own ``mc_predict``,
save/load and FLOP count side by side, as in nanoGPT's ``model.py``); splitting the modules
from the model they make up would hurt reading more than the extra lines do.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from levibot_pipelines.core.checks import check_min
from levibot_pipelines.core.models.mc_dropout import (
    MC_KEYS,
    check_mc_args,
    dropout,
    seeded_rng,
    summarise_draws,
)
from levibot_pipelines.core.models.precision import autocast, check_precision

HEAD_KEYS: tuple[str, ...] = ("logit", "mu", "sigma")


@dataclass(frozen=True)
class TransformerConfig:
    """Model size; the defaults are the seed architecture (128 bars x 10 features, 4x3 layers)."""

    n_features: int = 10
    window: int = 128
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 3
    d_ff: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("n_features", "window", "d_model", "n_heads", "n_layers", "d_ff"):
            check_min(name, getattr(self, name), 1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown TransformerConfig keys {sorted(unknown)}")
        return cls(**d)


# Rows x window x d_model of one MC pass (``mc_predict``'s default chunk): 8,192 rows of a
# 16 x 16 model, 2,048 of the small profile, 128 of the seed's.
MC_PASS_ELEMENTS = 2**21

PROFILES: dict[str, TransformerConfig] = {
    "seed": TransformerConfig(),
    "small": TransformerConfig(window=32, d_model=32, n_heads=2, n_layers=2, d_ff=64, dropout=0.1),
}


def resolve_profile(name: str, cuda_available: bool) -> tuple[str, TransformerConfig]:
    """Profile name -> (name, config); ``"auto"`` is ``"seed"`` on CUDA, else ``"small"``."""
    if name == "auto":
        name = "seed" if cuda_available else "small"
    if name not in PROFILES:
        raise ValueError(f"unknown model profile {name!r}; expected one of {['auto', *PROFILES]}")
    return name, PROFILES[name]


class SelfAttention(nn.Module):
    """Multi-head self-attention over all bars of the window (no causal mask: all are past).

    Dropout acts on the attention's output (after ``proj``), not on its weights: a mask of
    ``B x T x C`` numbers instead of another ``B x heads x T x T`` (4x as many at the seed's
    sizes), and the full blocks run through ``scaled_dot_product_attention`` without dropout,
    a fused kernel (in fp32, or on a GPU). On a fixed trained seed-profile model the MC
    spread is the same as with the weights' dropout (mean epistemic variances within 5%, PICP
    equal; ``benchmarks/models.py``): averaged over 128 keys, that dropout moved little.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.p = config.n_heads, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: Tensor, mc: bool, last_only: bool = False) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``; ``(B, 1, C)`` (last query only) if ``last_only``."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
        if last_only:
            q = q[:, -1:]  # (B, T, C) -> (B, 1, C)
        # (B, L, C) -> (B, n_heads, L, C // n_heads); L = T, or 1 for q if last_only
        q, k, v = (
            t.view(B, -1, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v)
        )
        # softmax(q k^T / sqrt(d)) v by hand for a single query (torch's CPU SDPA kernel rounds
        # identical batch rows differently across threads, then MC draws at dropout 0 would
        # disagree) and for bf16 on a CPU (its flash kernel's bf16 backward is 3x slower than
        # these two batched matmuls); SDPA's fused kernel otherwise.
        if last_only or (q.dtype == torch.bfloat16 and q.device.type == "cpu"):
            # (B, h, L, hd) @ (B, h, hd, T) -> (B, h, L, T) @ (B, h, T, hd) -> (B, h, L, hd)
            att = (q * (C // self.n_heads) ** -0.5) @ k.transpose(-2, -1)
            y = att.softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, hd)
        y = y.transpose(1, 2).reshape(B, -1, C)  # (B, n_heads, L, C // n_heads) -> (B, L, C)
        return dropout(self.proj(y), self.p, mc)


class MLP(nn.Module):
    """Position-wise ``Linear(d_model, d_ff) -> GELU -> Linear(d_ff, d_model)`` with dropout."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.p = config.dropout
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.proj = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x: Tensor, mc: bool) -> Tensor:
        return dropout(self.proj(F.gelu(self.fc(x))), self.p, mc)


class Block(nn.Module):
    """Pre-norm encoder block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    ``last_only``: ``(B, T, C)`` -> ``(B, 1, C)``, the last position's output alone (every
    position still serves as a key and value).
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mc: bool, last_only: bool = False) -> Tensor:
        h = self.attn(self.ln_1(x), mc, last_only)
        x = (x[:, -1:] if last_only else x) + h  # (B, T, C) -> (B, 1, C) if last_only
        return x + self.mlp(self.ln_2(x), mc)


class LevibotTransformer(nn.Module):
    """Window of bars -> direction logit and a Gaussian over the forward log return.

    Buffers (saved in the ``state_dict``): ``feature_mean``/``feature_std`` ``(F,)`` standardise
    the raw features; ``target_scale`` (scalar, log-return units) is the unit of ``mu``/``sigma``
    inside the network, so the heads work on O(1) numbers. ``precision`` (``"fp32"``, default,
    or ``"bf16"``: autocast, ``core.models.precision``) is how this process runs the model, not
    part of it: never saved, set with ``set_precision`` by whoever trains or loads it.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.precision = "fp32"
        self.embed = nn.Linear(config.n_features, config.d_model)
        self.pos = nn.Parameter(torch.zeros(config.window, config.d_model))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, len(HEAD_KEYS))  # columns: logit, mu, raw sigma
        self.register_buffer("feature_mean", torch.zeros(config.n_features))
        self.register_buffer("feature_std", torch.ones(config.n_features))
        self.register_buffer("target_scale", torch.tensor(1.0))
        self.apply(_init_weights)
        nn.init.normal_(self.pos, std=0.02)
        self.eval()  # the mode never matters (dropout is switched by `mc`); eval says so

    def set_scaling(self, mean: np.ndarray, std: np.ndarray, target_scale: float) -> None:
        """Store the fitted feature standardisation ``(F,)`` and target scale (> 0)."""
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        n_f = self.config.n_features
        if mean.shape != (n_f,) or std.shape != (n_f,):
            raise ValueError(f"mean/std must have shape ({n_f},), got {mean.shape}, {std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError(f"mean must be finite and std finite and > 0, got {mean}, {std}")
        if not (math.isfinite(target_scale) and target_scale > 0):
            raise ValueError(f"target_scale must be finite and > 0, got {target_scale}")
        self.feature_mean.copy_(torch.as_tensor(mean))
        self.feature_std.copy_(torch.as_tensor(std))
        self.target_scale.fill_(float(target_scale))

    def set_precision(self, precision: str) -> LevibotTransformer:
        """Run the forward pass in ``precision`` (``"fp32"`` or ``"bf16"``); returns ``self``."""
        self.precision = check_precision(precision)
        return self

    def forward(self, x: Tensor, mc: bool = False, draws: int = 1) -> dict[str, Tensor]:
        """``x`` ``(B, window, n_features)`` raw features -> dict of ``(draws * B,)`` float32
        tensors, draw-major (row ``d * B + b`` is draw ``d`` of window ``b``).

        Keys: ``logit``, ``p_up`` (= sigmoid(logit)), ``mu`` and ``sigma`` (> 0), both in
        log-return units. ``mc=True`` turns every dropout on (MC sampling, and training);
        ``draws`` > 1 repeats each window after the deterministic input projection.
        """
        cfg = self.config
        if x.ndim != 3 or x.shape[1:] != (cfg.window, cfg.n_features):
            raise ValueError(
                f"x must have shape (B, {cfg.window}, {cfg.n_features}), got {tuple(x.shape)}"
            )
        check_min("draws", draws, 1)
        with autocast(self.precision, x.device.type):
            # (B, T, F) -> (draws * B, C) -> (draws * B, 3)
            out = self.head(self._encode(x, mc, draws=draws)).float()
        logit, mu, raw_sigma = out.unbind(dim=1)  # (N, 3) -> 3 x (N,)
        sigma = F.softplus(raw_sigma) + 1e-6
        return {
            "logit": logit,
            "p_up": torch.sigmoid(logit),
            "mu": mu * self.target_scale,
            "sigma": sigma * self.target_scale,
        }

    def _encode(self, x: Tensor, mc: bool, last_only: bool = True, draws: int = 1) -> Tensor:
        """Raw ``(B, T, F)`` -> the last token after ``ln_f`` ``(draws * B, C)``.

        The input projection and positional embedding come before the first dropout, so they
        run once per window and their output is repeated ``draws`` times. ``last_only=False``
        runs every block over every position (the reference the tests compare the default
        path with).
        """
        x = (x - self.feature_mean) / self.feature_std
        h = self.embed(x) + self.pos  # (B, T, F) -> (B, T, C)
        if draws > 1:
            h = h.repeat(draws, 1, 1)  # (B, T, C) -> (draws * B, T, C), draw-major
        h = dropout(h, self.config.dropout, mc)
        for i, block in enumerate(self.blocks):
            h = block(h, mc, last_only and i == len(self.blocks) - 1)
        return self.ln_f(h[:, -1, :])  # (N, T or 1, C) -> (N, C)

    def mc_predict(
        self, x: Tensor, n_samples: int, chunk_size: int | None = None, *, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """MC-dropout prediction for ``x`` ``(B, window, n_features)``, ``n_samples`` draws per bar
        (no default: callers pass the configured count, setting ``LEVIBOT_MC_SAMPLES``).

        The draws run as one batched pass (each window's input projection computed once and
        repeated ``n_samples`` times on the batch axis), split so that at most ``chunk_size``
        rows go through the blocks at once (default ``MC_PASS_ELEMENTS // (window * d_model)``:
        a pass's activations stay in the CPU's caches; at the seed's sizes 128 rows, 2 bars x 50
        draws, run 3.8x as many rows/s in bf16 as 8,192 rows did). Draws use a private RNG
        seeded with ``seed`` (the global RNG is left as it was), in the model's ``precision``;
        the numbers depend on the chunking (the order of the draws).

        Returns float64 ``(B,)`` arrays (variances over draws are population variances):
            p_up: mean of sigmoid(logit). mu: mean of mu (log return).
            aleatoric: mean of sigma^2. epistemic: variance of mu. epistemic_p: variance of p.
            total: aleatoric + epistemic (variance of the predictive mixture over the return).
            confidence: ``|2 p_up - 1| * clip(1 - 2 std_p, 0, 1)``, ``std_p = sqrt(epistemic_p)``:
                the direction margin in [0, 1], shrunk to 0 as the draws disagree (``std_p`` of
                a probability is at most 0.5, reached when draws split between 0 and 1).
        """
        if chunk_size is None:
            chunk_size = max(1, MC_PASS_ELEMENTS // (self.config.window * self.config.d_model))
        check_mc_args(n_samples, chunk_size)
        out = {k: np.empty(x.shape[0]) for k in MC_KEYS}
        bars = max(1, chunk_size // n_samples)  # bars per pass
        group = min(n_samples, chunk_size)  # draws per pass; all of them unless n_samples > chunk
        with torch.inference_mode(), seeded_rng(seed, x.device):
            for start in range(0, x.shape[0], bars):
                xc = x[start : start + bars]
                sizes = [min(group, n_samples - s) for s in range(0, n_samples, group)]
                draws = [self._draws(xc, g) for g in sizes]
                stats = summarise_draws(*(torch.cat(d, dim=0) for d in zip(*draws, strict=True)))
                for k in MC_KEYS:
                    out[k][start : start + xc.shape[0]] = stats[k]
        return out

    def mc_predict_loop(
        self, x: Tensor, n_samples: int, chunk_size: int = 8192, *, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """``mc_predict``'s outputs from ``n_samples`` separate passes (benchmark reference)."""
        check_mc_args(n_samples, chunk_size)
        if x.shape[0] == 0:
            return {k: np.empty(0) for k in MC_KEYS}
        with torch.inference_mode(), seeded_rng(seed, x.device):
            passes = [
                [self(x[s : s + chunk_size], mc=True) for s in range(0, x.shape[0], chunk_size)]
                for _ in range(n_samples)
            ]
            # n_samples x chunks x {key: (b,)} -> {key: (n_samples, B)}
            draws = [torch.stack([torch.cat([c[k] for c in p]) for p in passes]) for k in HEAD_KEYS]
            return summarise_draws(*draws)

    def _draws(self, xc: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` dropout draws for each bar of ``xc`` in one pass -> logit, mu, sigma ``(n, b)``."""
        b = xc.shape[0]
        out = self(xc, mc=True, draws=n)  # (b, T, F) -> (n*b,) each, draw-major
        return tuple(out[k].view(n, b) for k in HEAD_KEYS)  # (n*b,) -> (n, b)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def save_model(model: LevibotTransformer) -> tuple[dict[str, Tensor], dict]:
    """-> (CPU ``state_dict`` with the scaling buffers, config dict for JSON)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return state, model.config.to_dict()


def load_model(state_dict: dict[str, Tensor], config: dict) -> LevibotTransformer:
    """Rebuild a model from ``save_model``'s output (strict: every key must match)."""
    model = LevibotTransformer(TransformerConfig.from_dict(config))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def state_dict_to_bytes(state_dict: dict[str, Tensor]) -> bytes:
    """Serialise tensors with ``torch.save`` (loadable with ``weights_only=True``)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def state_dict_from_bytes(data: bytes) -> dict[str, Tensor]:
    """Inverse of ``state_dict_to_bytes``; ``weights_only=True``, onto the CPU."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def count_flops(config: TransformerConfig, batch: int) -> int:
    """Forward FLOPs of ``batch`` windows: 2 x multiply-accumulates of every matmul.

    Per window with ``T = window``, ``C = d_model``, ``F = n_features``, a block with ``L``
    query positions costs qkv ``6TC^2`` (keys and values need every position), attention scores
    ``2LTC``, weighted sum ``2LTC``, output projection ``2LC^2`` and MLP ``4LC*d_ff``. Every
    block but the last has ``L = T``; the last has ``L = 1`` (only the last token reaches the
    heads). Plus input projection ``2TFC`` and heads ``2C*3``. Biases, LayerNorm, softmax, GELU
    and dropout are left out (O(TC) each). A training step (forward + backward) costs about 3x
    the forward.
    """
    check_min("batch", batch, 0)
    T, C, n_f, d_ff = config.window, config.d_model, config.n_features, config.d_ff

    def block(L: int) -> int:
        return 6 * T * C * C + 4 * L * T * C + 2 * L * C * C + 4 * L * C * d_ff

    blocks = (config.n_layers - 1) * block(T) + block(1)
    per_window = 2 * T * n_f * C + blocks + 2 * C * len(HEAD_KEYS)
    return batch * per_window
