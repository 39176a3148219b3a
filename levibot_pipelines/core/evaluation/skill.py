"""Models judged by what trades: the information coefficient, the mean forward return by score
decile and paired differences in log loss and AUC, each with a moving-block bootstrap CI.

Inputs are the pooled walk-forward test bars in time order (folds concatenated): ``y`` (0/1
direction), ``fwd_ret`` (the label's log return, e.g. the next bar's) and one ``P(up)`` array
per model, all shape (n,). The bootstrap is the moving-block bootstrap (Kuensch 1989): each
resample concatenates ``ceil(n / block)`` blocks of ``block`` consecutive bars with uniformly
drawn starts in ``[0, n - block]``, truncated to ``n`` bars, so autocorrelation within a block
(default 96 bars, one day of 15m bars) is kept. One set of resamples (seeded) serves every
model, which makes the model differences paired. CIs are percentile intervals (default 95%).

Each statistic of a resample is computed from the multiplicity of each bar in it (``counts``,
shape (B, n)), exactly as on the resampled series itself (ranks re-taken within the resample),
without materializing resampled copies: one matrix pass per statistic, no per-resample loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from levibot_pipelines.core.checks import check_array, check_int, check_labels, check_same_length
from levibot_pipelines.core.metrics import ece_quantile

BPS = 1e4


@dataclass(frozen=True)
class BootstrapConfig:
    """The moving-block bootstrap: ``block`` bars per block (96 = one day of 15m bars; capped at n),
    ``resamples`` draws, ``seed``, the CI ``level``; ``deciles`` score bins; ``chunk`` resamples
    held in memory at once (a (chunk, n) float64 matrix per statistic; results do not depend on
    it); ``ece_bins`` equal-count bins of ``ece_quantile``."""

    block: int = 96
    resamples: int = 500
    seed: int = 0
    level: float = 0.95
    deciles: int = 10
    chunk: int = 100
    ece_bins: int = 15

    def __post_init__(self) -> None:
        for name in ("block", "resamples", "deciles", "chunk", "ece_bins"):
            check_int(name, getattr(self, name), 1)
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {self.level}")


def block_bootstrap_indices(n: int, block: int, resamples: int, seed: int) -> np.ndarray:
    """Bar indices of ``resamples`` moving-block bootstrap resamples of ``n`` bars.

    Returns shape (resamples, n) int64: row ``b`` is ``ceil(n / block)`` runs
    ``s, s+1, ..., s+block-1`` with starts ``s`` drawn uniformly from ``[0, n - block]``
    (``np.random.default_rng(seed)``), truncated to ``n``. ``block == n`` gives the original
    order in every row; ``block == 1`` is the i.i.d. bootstrap. ``1 <= block <= n``.
    """
    n = check_int("n", n, 1)
    block = check_int("block", block, 1)
    resamples = check_int("resamples", resamples, 1)
    if block > n:
        raise ValueError(f"block must be <= n = {n}, got {block}")
    k = -(-n // block)
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(resamples, k))
    idx = starts[:, :, None] + np.arange(block)  # (B, k, block)
    return idx.reshape(resamples, k * block)[:, :n]


def resample_counts(idx: np.ndarray) -> np.ndarray:
    """How often each bar occurs in each resample: (B, n) int indices -> (B, n) float64."""
    b, n = idx.shape
    flat = (np.arange(b)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks (1-based, ties averaged) of bar values ``x`` (n,) within each resample whose
    bar multiplicities are the rows of ``w`` (B, n); bars absent from a resample get a rank
    that carries weight 0. With ``w`` all ones this is ``scipy.stats.rankdata(x)``."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ws = w[:, order]  # (B, n) in value order
    if starts.size < x.size:  # ties in x: one rank per run of equal values
        group_w = np.add.reduceat(ws, starts, axis=1)  # (B, G)
        gid = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, x.size]))
        ranks = (np.cumsum(group_w, axis=1) - group_w + (group_w + 1.0) / 2.0)[:, gid]
    else:
        ranks = np.cumsum(ws, axis=1) - ws + (ws + 1.0) / 2.0
    out = np.empty_like(ws)
    out[:, order] = ranks
    return out


def _rowdot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (B, n) arrays: shape (B,)."""
    return np.einsum("ij,ij->i", u, v)


@dataclass(frozen=True)
class _Shared:
    """What every model's statistics share within one chunk of resamples ``w`` (B, n)."""

    w: np.ndarray  # bar multiplicities
    total: np.ndarray  # (B,) bars per resample (= n)
    wy: np.ndarray  # (B, n) multiplicity of up bars
    n_pos: np.ndarray  # (B,) up bars per resample
    w_dr: np.ndarray  # (B, n) multiplicity x centered resample rank of fwd_ret
    var_r: np.ndarray  # (B,) sum of squared centered ranks of fwd_ret

    @classmethod
    def of(cls, y: np.ndarray, r: np.ndarray, w: np.ndarray) -> _Shared:
        total = w.sum(axis=1)
        dr = weighted_midranks(r, w) - ((total + 1.0) / 2.0)[:, None]  # mean rank (N+1)/2
        wy, w_dr = w * y, w * dr
        return cls(w, total, wy, wy.sum(axis=1), w_dr, _rowdot(w_dr, dr))


def resample_stats(
    y: np.ndarray,
    r: np.ndarray,
    p: np.ndarray,
    w: np.ndarray,
    onehot: np.ndarray | None = None,
    shared: _Shared | None = None,
) -> dict[str, np.ndarray]:
    """One model's statistics on each resample, from bar multiplicities ``w`` (B, n), exactly
    as on the resampled series (ranks re-taken within it): ``ic`` (Spearman of ``p`` with
    ``r``), ``auc`` (Mann-Whitney, ties one half), ``log_loss``, each (B,), NaN where undefined
    (a constant side; one class); with ``onehot`` ((n, D) decile membership) also ``deciles``
    (B, D), the mean of ``r`` per decile in bps. ``shared``: the chunk's ``_Shared.of``."""
    sh = shared or _Shared.of(y, r, w)
    rank_p = weighted_midranks(p, w)
    dp = rank_p - ((sh.total + 1.0) / 2.0)[:, None]
    var_p = _rowdot(w * dp, dp)  # exactly 0 for a constant p (every rank (N+1)/2)
    n_neg = sh.total - sh.n_pos
    u = _rowdot(rank_p, sh.wy) - sh.n_pos * (sh.n_pos + 1.0) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        ic = _rowdot(sh.w_dr, dp) / np.sqrt(var_p * sh.var_r)
        out = {
            "ic": np.where((var_p > 0) & (sh.var_r > 0), ic, np.nan),
            "auc": np.where((sh.n_pos > 0) & (n_neg > 0), u / (sh.n_pos * n_neg), np.nan),
            "log_loss": (w @ _per_bar_log_loss(y, p)) / sh.total,
        }
        if onehot is not None:
            out["deciles"] = BPS * (w @ (onehot * r[:, None])) / (w @ onehot)
    return out


def decile_index(p: np.ndarray, deciles: int = 10) -> np.ndarray | None:
    """Score bin of each bar, 0..deciles-1, or None when ``p`` has fewer than ``deciles``
    distinct values (a rule or a base rate: its "deciles" would be a few tied groups).

    Edges are the quantiles of the pooled ``p`` at ``k / deciles`` (``np.quantile``, linear);
    the bin is ``searchsorted(edges, p, side="right")``, so tied scores share a bin and a bin
    may hold more or fewer than n / deciles bars (its ``n`` is reported; an empty bin is NaN).
    """
    if np.unique(p).size < deciles:
        return None
    return np.searchsorted(np.quantile(p, np.arange(1, deciles) / deciles), p, side="right")


def _per_bar_log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    q = np.clip(p, eps, 1.0 - eps)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


def _ci(samples: np.ndarray, level: float) -> list:
    """Percentile interval ``[lo, hi]`` of (B,) samples, or one per column of (B, D) samples;
    NaN resamples are ignored, and all-NaN gives ``[nan, nan]``."""
    if samples.ndim == 2:
        return [_ci(samples[:, j], level) for j in range(samples.shape[1])]
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    tail = 50.0 * (1.0 - level)
    return [float(v) for v in np.percentile(finite, [tail, 100.0 - tail])]


def _check_inputs(y: object, fwd_ret: object, p_by_model: dict[str, object]):
    y_arr, r = check_labels(y), check_array(fwd_ret, "fwd_ret")
    ps = {name: check_array(p, f"p_{name}") for name, p in p_by_model.items()}
    check_same_length(y=y_arr, fwd_ret=r, **{f"p_{k}": v for k, v in ps.items()})
    return y_arr, r, ps


def pairs_of(models: list[str]) -> list[tuple[str, str]]:
    """The paired comparisons among ``models``: deep vs lgbm, and each model vs the reversal
    rule (differences are always first minus second)."""
    pairs = [("deep", "lgbm")] if {"deep", "lgbm"} <= set(models) else []
    if "reversal" in models:
        pairs += [(m, "reversal") for m in models if m != "reversal"]
    return pairs


def _bootstrap(y, r, ps, onehots, cfg: BootstrapConfig) -> dict[str, dict[str, np.ndarray]]:
    """Each model's statistics on every resample, computed ``cfg.chunk`` resamples at a time."""
    idx = block_bootstrap_indices(r.size, min(cfg.block, r.size), cfg.resamples, cfg.seed)
    parts: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in ps}
    for lo in range(0, cfg.resamples, cfg.chunk):
        w = resample_counts(idx[lo : lo + cfg.chunk])
        shared = _Shared.of(y, r, w)
        for name, p in ps.items():
            for key, v in resample_stats(y, r, p, w, onehots[name], shared).items():
                parts[name].setdefault(key, []).append(v)
    return {m: {k: np.concatenate(v) for k, v in d.items()} for m, d in parts.items()}


def _deciles(r: np.ndarray, p: np.ndarray, dec, boot: np.ndarray, level: float) -> list[dict]:
    cis = _ci(boot, level)
    rows = []
    for d, ci in enumerate(cis):
        inside = dec == d
        has = bool(inside.any())
        rows.append(
            {
                "decile": d + 1,
                "p_lo": float(p[inside].min()) if has else float("nan"),
                "p_hi": float(p[inside].max()) if has else float("nan"),
                "n": int(inside.sum()),
                "mean_bps": float(BPS * r[inside].mean()) if has else float("nan"),
                "ci_bps": ci,
            }
        )
    return rows


def skill_scores(
    y: object,
    fwd_ret: object,
    p_by_model: dict[str, object],
    cfg: BootstrapConfig | None = None,
) -> dict[str, dict]:
    """Per model: ``ic`` (Spearman of p with ``fwd_ret``) and ``ic_ci``; ``deciles`` (list of
    ``{decile, p_lo, p_hi, n, mean_bps, ci_bps}``, mean ``fwd_ret`` in bps = 1e4 x log return;
    ``[]`` with ``deciles_skipped`` when ``p`` has fewer than ``cfg.deciles`` distinct values),
    ``top_minus_bottom_bps`` and its ``_ci_bps``; ``ece_quantile``; ``paired`` keyed
    ``"{a}_vs_{b}"`` (``pairs_of``) with ``log_loss_diff``/``auc_diff`` (a minus b: a negative
    log-loss or positive AUC difference favours a) and their ``_ci``. CIs are [lo, hi] lists;
    NaN where undefined (e.g. a constant p's IC)."""
    cfg = cfg or BootstrapConfig()
    y, r, ps = _check_inputs(y, fwd_ret, p_by_model)
    decs = {m: decile_index(p, cfg.deciles) for m, p in ps.items()}
    eye = np.eye(cfg.deciles)
    onehots = {m: None if d is None else eye[d] for m, d in decs.items()}  # (n, D) each
    boot = _bootstrap(y, r, ps, onehots, cfg)
    ones = np.ones((1, r.size))
    shared = _Shared.of(y, r, ones)
    point = {m: resample_stats(y, r, p, ones, onehots[m], shared) for m, p in ps.items()}
    out: dict[str, dict] = {}
    for m, p in ps.items():
        s = {
            "ic": float(point[m]["ic"][0]),
            "ic_ci": _ci(boot[m]["ic"], cfg.level),
            "ece_quantile": ece_quantile(y, p, cfg.ece_bins),
            "deciles": [],
            "top_minus_bottom_bps": float("nan"),
            "top_minus_bottom_ci_bps": [float("nan"), float("nan")],
            "paired": {},
        }
        if decs[m] is None:
            s["deciles_skipped"] = f"fewer than {cfg.deciles} distinct scores"
        else:
            s["deciles"] = _deciles(r, p, decs[m], boot[m]["deciles"], cfg.level)
            spread = boot[m]["deciles"][:, -1] - boot[m]["deciles"][:, 0]
            s["top_minus_bottom_bps"] = s["deciles"][-1]["mean_bps"] - s["deciles"][0]["mean_bps"]
            s["top_minus_bottom_ci_bps"] = _ci(spread, cfg.level)
        out[m] = s
    for a, b in pairs_of(list(ps)):
        out[a]["paired"][f"{a}_vs_{b}"] = {
            f"{k}_diff{suffix}": value
            for k in ("log_loss", "auc")
            for suffix, value in (
                ("", float(point[a][k][0] - point[b][k][0])),
                ("_ci", _ci(boot[a][k] - boot[b][k], cfg.level)),
            )
        }
    return out
