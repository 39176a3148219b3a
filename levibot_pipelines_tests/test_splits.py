from dataclasses import replace

import numpy as np
import pytest

from levibot_pipelines.core.evaluation.splits import (
    Fold,
    WalkForwardConfig,
    min_purge,
    splits_from,
    walk_forward_splits,
)

SMALL = WalkForwardConfig(train=10, val=3, calib=2, test=4, purge=2)
PARTS = ("train", "val", "calib", "test")


def test_small_config_boundaries_by_hand():
    # span = 10 + 3 + 2 + 4 + 3 * 2 = 25; folds start at 0, 4, 8, 12 (the next ends at 41 > 40)
    folds = walk_forward_splits(40, SMALL)
    assert [f.as_dict() for f in folds] == [
        {"index": 0, "train": (0, 10), "val": (12, 15), "calib": (17, 19), "test": (21, 25)},
        {"index": 1, "train": (4, 14), "val": (16, 19), "calib": (21, 23), "test": (25, 29)},
        {"index": 2, "train": (8, 18), "val": (20, 23), "calib": (25, 27), "test": (29, 33)},
        {"index": 3, "train": (12, 22), "val": (24, 27), "calib": (29, 31), "test": (33, 37)},
    ]
    np.testing.assert_array_equal(folds[0].val, [12, 13, 14])
    assert all(getattr(f, p).dtype == np.int64 for f in folds for p in PARTS)


def test_last_fold_may_end_exactly_at_n_samples():
    folds = walk_forward_splits(41, SMALL)
    assert len(folds) == 5
    assert folds[-1].test[-1] == 40


def test_single_fold_at_exact_span():
    assert len(walk_forward_splits(SMALL.span, SMALL)) == 1


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        WalkForwardConfig(train=50, val=7, calib=5, test=9, purge=0),
        WalkForwardConfig(train=30, val=5, calib=5, test=6, step=4, purge=11),
        WalkForwardConfig(train=30, val=5, calib=5, test=6, step=9, purge=3, expanding=True),
    ],
)
def test_purge_gaps_and_time_order(cfg: WalkForwardConfig):
    folds = walk_forward_splits(300, cfg)
    assert len(folds) > 1
    for f in folds:
        parts = [getattr(f, p) for p in PARTS]
        for part, size in zip(parts[1:], (cfg.val, cfg.calib, cfg.test), strict=True):
            assert len(part) == size
        for part in parts:
            assert np.all(np.diff(part) == 1)
        for a, b in zip(parts, parts[1:], strict=False):
            assert b[0] - a[-1] - 1 == cfg.purge
        everything_before_test = np.concatenate(parts[:3])
        assert everything_before_test.max() < f.test.min()
        assert len(np.unique(np.concatenate(parts))) == sum(len(p) for p in parts)
        assert f.test[-1] < 300


def test_test_parts_tile_when_step_is_test():
    folds = walk_forward_splits(1_000, SMALL)
    tests = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(tests, np.arange(tests[0], tests[-1] + 1))
    assert len(np.unique(tests)) == len(tests)


def test_rolling_train_has_fixed_length_and_expanding_starts_at_zero():
    rolling = walk_forward_splits(200, SMALL)
    assert {len(f.train) for f in rolling} == {10}
    expanding = walk_forward_splits(200, replace(SMALL, expanding=True))
    assert all(f.train[0] == 0 for f in expanding)
    assert [f.train[-1] for f in expanding] == [f.train[-1] for f in rolling]
    assert [len(f.train) for f in expanding] == [10 + 4 * k for k in range(len(expanding))]


def test_default_config_fits_seed_window_and_two_years():
    # The settings' defaults LEVIBOT_WALK=20000,3000,3000,4000 and LEVIBOT_PURGE=130.
    cfg = WalkForwardConfig(train=20_000, val=3_000, calib=3_000, test=4_000, purge=130)
    assert cfg.stride == cfg.test == 4_000 and cfg.purge >= min_purge(1, 128)
    folds = walk_forward_splits(70_080, cfg, required_purge=min_purge(1, 128))
    assert len(folds) == (70_080 - cfg.span) // 4_000 + 1
    assert isinstance(folds[0], Fold)


def test_min_purge():
    assert min_purge(1, 1) == 1
    assert min_purge(1, 128) == 128
    assert min_purge(4, 128) == 131
    with pytest.raises(ValueError, match="horizon must be an integer >= 1, got 0"):
        min_purge(0, 128)
    with pytest.raises(ValueError, match="window must be an integer >= 1, got -3"):
        min_purge(1, -3)


@pytest.mark.parametrize(
    ("field", "value"),
    [("train", 0), ("val", -1), ("calib", 0), ("test", 0), ("step", 0), ("purge", -1)],
)
def test_config_rejects_bad_sizes(field: str, value: int):
    with pytest.raises(ValueError, match=f"{field} must be an integer >= ., got {value}"):
        replace(SMALL, **{field: value})


def test_config_rejects_non_integer():
    with pytest.raises(ValueError, match="train must be an integer >= 1, got 1.5"):
        replace(SMALL, train=1.5)  # type: ignore[arg-type]


def test_purge_below_required_is_rejected():
    with pytest.raises(ValueError, match=r"cfg.purge=2 is below required_purge=128"):
        walk_forward_splits(1_000, SMALL, required_purge=min_purge(1, 128))


def test_too_few_samples_says_how_many_are_needed():
    with pytest.raises(ValueError, match=r"n_samples=24 is too few .* need at least 25"):
        walk_forward_splits(24, SMALL)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 0, got -1"):
        walk_forward_splits(-1, SMALL)


def test_first_test_aligns_fold_zero_and_uses_everything_before_when_expanding():
    # train 10, val 3, calib 3, test 4, purge 2: 22 samples precede a test part.
    cfg = WalkForwardConfig(train=10, val=3, calib=3, test=4, purge=2, expanding=True)
    folds = walk_forward_splits(40, cfg, first_test=30)
    assert [(int(f.test[0]), int(f.test[-1]) + 1) for f in folds] == [(30, 34), (34, 38)]
    # fold 0 starts at 30 - 22 = 8; expanding: train is [0, 18), everything before val.
    assert (int(folds[0].train[0]), int(folds[0].train[-1]) + 1) == (0, 18)
    assert (int(folds[0].val[0]), int(folds[0].calib[-1]) + 1) == (20, 28)
    rolling = walk_forward_splits(40, replace(cfg, expanding=False), first_test=30)
    assert (int(rolling[0].train[0]), int(rolling[0].train[-1]) + 1) == (8, 18)


def test_first_test_with_too_short_a_history_says_how_many_bars_are_missing():
    cfg = WalkForwardConfig(train=10, val=3, calib=3, test=4, purge=2)
    with pytest.raises(ValueError, match="only 15 samples precede .* needs 22 .*: 7 missing"):
        walk_forward_splits(40, cfg, first_test=15)
    with pytest.raises(ValueError, match="only 3 samples from the first test sample on"):
        walk_forward_splits(40, cfg, first_test=37)


def test_splits_from_a_date_name_the_symbol_the_date_and_the_bars_missing():
    cfg = WalkForwardConfig(train=10, val=3, calib=3, test=4, purge=2)
    times = np.arange(40, dtype=np.int64) * 900_000  # 15m bars from 1970-01-01 00:00
    folds = splits_from(times, cfg, required_purge=2, test_from_ms=30 * 900_000, what="BTCUSDT")
    assert int(folds[0].test[0]) == 30
    between = 29 * 900_000 + 1  # between bars 29 and 30: the first test bar is 30
    assert int(splits_from(times, cfg, required_purge=2, test_from_ms=between)[0].test[0]) == 30
    with pytest.raises(
        ValueError, match=r"BTCUSDT: test from 1970-01-01 03:00 UTC: only 12 samples .*10 missing"
    ):
        splits_from(times, cfg, required_purge=2, test_from_ms=12 * 900_000, what="BTCUSDT")
