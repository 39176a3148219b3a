"""Purged walk-forward splits: train -> purge -> val -> purge -> calib -> purge -> test.

Indices are sample positions in one symbol's feature table, sorted by time, one sample per 15m
bar. Sample ``t`` carries information from the bars ``[t - L + 1, t + h]``: its input window
of ``L`` bars ends at ``t`` and its label looks ``h`` bars ahead. Consecutive parts of a fold
are separated by ``purge`` dropped samples so that no two samples on either side of a gap share
a bar (purging and embargo, López de Prado, *Advances in Financial Machine Learning*, 2018,
ch. 7.4). Every part of a fold lies strictly before its test part, and folds advance through
time by ``step`` samples, so everything fitted in a fold has seen only the past of its test part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from levibot_pipelines.core.checks import check_int

PARTS = ("train", "val", "calib", "test")


@dataclass(frozen=True)
class WalkForwardConfig:
    """Sizes of one walk-forward fold, in samples (= bars of one symbol).

    ``train`` (fitting), ``val`` (early stopping), ``calib`` (probability calibration), ``test``
    and the keyword-only ``purge`` (samples dropped between consecutive parts, at least
    ``min_purge(horizon, window)``) have no default: the pipeline passes the configured
    ``LEVIBOT_WALK`` and ``LEVIBOT_PURGE``. ``step=None`` (advance by ``test``, so test parts
    tile), ``expanding=False`` (a rolling train window of fixed length; ``True`` keeps the train
    start at sample 0 and grows it fold by fold).
    """

    train: int
    val: int
    calib: int
    test: int
    step: int | None = None
    purge: int = field(kw_only=True)
    expanding: bool = False

    def __post_init__(self) -> None:
        for name in PARTS:
            check_int(name, getattr(self, name), 1)
        if self.step is not None:
            check_int("step", self.step, 1)
        check_int("purge", self.purge, 0)

    @property
    def stride(self) -> int:
        """Samples between the starts of consecutive folds (``step``, or ``test`` if unset)."""
        return self.test if self.step is None else self.step

    @property
    def span(self) -> int:
        """Samples covered by the first fold: the four parts plus three purge gaps."""
        return self.train + self.val + self.calib + self.test + 3 * self.purge


def min_purge(horizon: int, window: int) -> int:
    """Smallest purge (in samples) that keeps two parts of a fold informationally disjoint.

    Sample ``t`` uses bars ``[t - window + 1, t + horizon]``: its input window of ``window``
    bars ends at ``t`` and its label (close(t) -> close(t + horizon)) reaches ``horizon`` bars
    ahead. The last sample ``j`` of one part and the first sample ``i`` of the next share no bar
    iff ``j + horizon < i - window + 1``, i.e. ``i - j - 1 >= horizon + window - 1`` samples are
    dropped between them. The ``horizon`` term is López de Prado's purge (no training label
    overlaps an evaluated label); the ``window - 1`` term is an embargo for windowed inputs
    (no evaluated input window contains a bar that a training label was computed from), see
    López de Prado, *Advances in Financial Machine Learning*, 2018, ch. 7.4.1-7.4.2.

    Args:
        horizon: label horizon ``h`` in bars, >= 1 (default pipeline: 1).
        window: input window length ``L`` in bars, >= 1 (1 for a tabular model on the current
            row; 128 for the seed's Transformer).

    Returns:
        ``horizon + window - 1``, e.g. 128 for ``h=1, L=128``.
    """
    check_int("horizon", horizon, 1)
    check_int("window", window, 1)
    return horizon + window - 1


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: time-ordered int64 sample indices of each part.

    ``train``, ``val``, ``calib`` and ``test`` are 1-D ``np.int64`` arrays of consecutive
    indices, each part ending at least ``purge + 1`` samples before the next one starts.
    """

    index: int
    train: np.ndarray
    val: np.ndarray
    calib: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, int | tuple[int, int]]:
        """``{"index": k, "train": (start, end), ...}`` with half-open ``[start, end)`` bounds."""
        out: dict[str, int | tuple[int, int]] = {"index": self.index}
        for name in PARTS:
            part = getattr(self, name)
            out[name] = (int(part[0]), int(part[-1]) + 1)
        return out


def _part(start: int, stop: int) -> np.ndarray:
    return np.arange(start, stop, dtype=np.int64)


def walk_forward_splits(
    n_samples: int,
    cfg: WalkForwardConfig,
    *,
    required_purge: int = 0,
    first_test: int | None = None,
) -> list[Fold]:
    """Purged walk-forward folds over ``n_samples`` time-ordered samples.

    Fold ``k`` starts at ``s = offset + k * cfg.stride`` and is laid out as::

        train [s, s+train) | purge | val | purge | calib | purge | test

    (with ``expanding=True`` train is ``[0, s+train)`` instead). ``offset`` is 0, or, with
    ``first_test``, chosen so that fold 0's test part starts at sample ``first_test`` (every
    sample before it is available for fitting, none after it is scored earlier). Folds are
    generated while the
    test part ends at or before ``n_samples``; trailing samples that do not fill a whole test
    part are left out. With ``step == test`` (the default) the test parts of consecutive folds
    are contiguous and do not overlap, so their concatenation is one out-of-sample stretch.

    Args:
        n_samples: number of samples (rows of one symbol's feature table), >= 0.
        cfg: part sizes, purge and stride.
        required_purge: the purge the caller's features/labels need, usually
            ``min_purge(horizon, window)``; ``cfg.purge`` must be at least this.
        first_test: the sample where the first test part starts (None: where the first whole
            fold ends up, ``cfg.span - cfg.test``).

    Returns:
        Folds in time order, ``index`` 0, 1, ...

    Raises:
        ValueError: if ``cfg.purge < required_purge``, ``n_samples < cfg.span`` (not even one
            fold fits), or fewer than ``cfg.span - cfg.test`` samples precede ``first_test``
            (the message says how many are missing) or no whole test part follows it.
    """
    check_int("n_samples", n_samples, 0)
    check_int("required_purge", required_purge, 0)
    if cfg.purge < required_purge:
        raise ValueError(
            f"cfg.purge={cfg.purge} is below required_purge={required_purge}: parts would share "
            f"bars (purge must be >= label horizon + window - 1)"
        )
    offset = _offset(n_samples, cfg, first_test)  # with first_test: its own, clearer errors
    if n_samples < cfg.span:
        raise ValueError(
            f"n_samples={n_samples} is too few for one walk-forward fold: need at least "
            f"{cfg.span} = train {cfg.train} + val {cfg.val} + calib {cfg.calib} + "
            f"test {cfg.test} + 3 * purge {cfg.purge}"
        )
    n_folds = (n_samples - offset - cfg.span) // cfg.stride + 1
    folds = []
    for k in range(n_folds):
        start = offset + k * cfg.stride
        train_end = start + cfg.train
        val_start = train_end + cfg.purge
        calib_start = val_start + cfg.val + cfg.purge
        test_start = calib_start + cfg.calib + cfg.purge
        folds.append(
            Fold(
                index=k,
                train=_part(0 if cfg.expanding else start, train_end),
                val=_part(val_start, val_start + cfg.val),
                calib=_part(calib_start, calib_start + cfg.calib),
                test=_part(test_start, test_start + cfg.test),
            )
        )
    return folds


def _offset(n_samples: int, cfg: WalkForwardConfig, first_test: int | None) -> int:
    """Where fold 0 starts so that its test part starts at ``first_test`` (0 without it)."""
    if first_test is None:
        return 0
    check_int("first_test", first_test, 0)
    before = cfg.span - cfg.test  # train + val + calib + 3 purges precede a test part
    if first_test < before:
        raise ValueError(
            f"only {first_test} samples precede the first test sample, a fold needs {before} "
            f"(train {cfg.train} + val {cfg.val} + calib {cfg.calib} + 3 * purge {cfg.purge}): "
            f"{before - first_test} missing"
        )
    if first_test + cfg.test > n_samples:
        raise ValueError(
            f"only {n_samples - first_test} samples from the first test sample on, a test part "
            f"needs {cfg.test}"
        )
    return first_test - before


def splits_from(
    sample_times: np.ndarray,
    cfg: WalkForwardConfig,
    *,
    required_purge: int,
    test_from_ms: int | None,
    what: str = "history",
) -> list[Fold]:
    """``walk_forward_splits`` over samples with bar times ``sample_times`` (ms UTC,
    increasing, shape (n,)); with ``test_from_ms`` the first test part starts at the first
    sample at or after it. A history too short for that is a ``ValueError`` naming ``what``
    (e.g. the symbol), the date and how many bars are missing."""
    if test_from_ms is None:
        return walk_forward_splits(len(sample_times), cfg, required_purge=required_purge)
    first = int(np.searchsorted(sample_times, test_from_ms))
    try:
        return walk_forward_splits(
            len(sample_times), cfg, required_purge=required_purge, first_test=first
        )
    except ValueError as exc:
        day = datetime.fromtimestamp(test_from_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise ValueError(f"{what}: test from {day}: {exc} (a sample is a bar)") from None
