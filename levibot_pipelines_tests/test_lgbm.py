import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from levibot_pipelines.core.models.lgbm import (
    LGBMConfig,
    booster_from_text,
    booster_to_text,
    feature_importance,
    fit_lgbm,
    predict_proba,
)

FAST = LGBMConfig(n_estimators=200, learning_rate=0.1, min_child_samples=50)
NAMES = ["signal", "interaction", "noise_a", "noise_b", "noise_c"]


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5 features; P(up) depends on the first (linearly) and the second (non-linearly)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    logit = 1.5 * X[:, 0] + np.where(X[:, 1] > 0.5, 1.0, -0.3)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = planted(6_000, seed=1)
    tr, va, te = slice(0, 4_000), slice(4_000, 5_000), slice(5_000, None)
    return {"Xtr": X[tr], "ytr": y[tr], "Xva": X[va], "yva": y[va], "Xte": X[te], "yte": y[te]}


@pytest.fixture(scope="module")
def booster(data):
    return fit_lgbm(
        data["Xtr"], data["ytr"], data["Xva"], data["yva"], FAST, seed=3, feature_names=NAMES
    )


def test_learns_planted_signal(data, booster):
    p = predict_proba(booster, data["Xte"])
    assert p.shape == (1_000,) and p.dtype == np.float64
    assert np.all((p > 0.0) & (p < 1.0))
    assert roc_auc_score(data["yte"], p) > 0.7


def test_importance_ranks_planted_features_first(booster):
    gain = feature_importance(booster)
    assert list(gain) == NAMES
    assert sorted(gain, key=gain.get, reverse=True)[:2] == ["signal", "interaction"]


def test_early_stopping_on_noise_stops_before_n_estimators():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3_000, 5))
    y = rng.integers(0, 2, 3_000)
    cfg = LGBMConfig()
    b = fit_lgbm(X[:2_000], y[:2_000], X[2_000:], y[2_000:], cfg, seed=0)
    # training went on early_stopping_rounds past the best round, then stopped
    assert b.best_iteration + cfg.early_stopping_rounds < cfg.n_estimators
    assert b.num_trees() == b.best_iteration


def test_planted_signal_trains_past_the_first_rounds(booster):
    assert 10 < booster.best_iteration <= FAST.n_estimators
    assert booster.num_trees() == booster.best_iteration


def test_text_round_trip_gives_identical_predictions(data, booster):
    text = booster_to_text(booster)
    assert text.startswith("tree") and isinstance(text, str)
    loaded = booster_from_text(text)
    assert loaded.num_trees() == booster.best_iteration
    np.testing.assert_array_equal(
        predict_proba(loaded, data["Xte"]), predict_proba(booster, data["Xte"])
    )
    assert feature_importance(loaded) == pytest.approx(feature_importance(booster))


def test_same_seed_same_predictions_other_seed_differs(data, booster):
    args = (data["Xtr"], data["ytr"], data["Xva"], data["yva"], FAST)
    again = fit_lgbm(*args, seed=3, feature_names=NAMES)
    np.testing.assert_array_equal(
        predict_proba(again, data["Xte"]), predict_proba(booster, data["Xte"])
    )
    other = fit_lgbm(*args, seed=4, feature_names=NAMES)
    assert not np.array_equal(
        predict_proba(other, data["Xte"]), predict_proba(booster, data["Xte"])
    )


def test_nan_features_are_allowed(data):
    Xtr = data["Xtr"].copy()
    Xtr[::7, 2] = np.nan
    b = fit_lgbm(Xtr, data["ytr"], data["Xva"], data["yva"], FAST, seed=0)
    assert np.isfinite(predict_proba(b, data["Xte"])).all()


def test_config_to_dict():
    d = LGBMConfig().to_dict()
    assert d["num_leaves"] == 15 and d["early_stopping_rounds"] == 50 and len(d) == 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_leaves": 1}, "num_leaves must be >= 2, got 1"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
        ({"feature_fraction": 1.5}, r"feature_fraction must be in \(0, 1\], got 1.5"),
        ({"n_estimators": 0}, "n_estimators must be >= 1, got 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LGBMConfig(**kwargs)


def test_input_errors(data, booster):
    Xtr, ytr, Xva, yva = data["Xtr"], data["ytr"], data["Xva"], data["yva"]
    with pytest.raises(ValueError, match=r"y_train must have shape \(4000,\).*got \(3999,\)"):
        fit_lgbm(Xtr, ytr[:-1], Xva, yva, FAST)
    with pytest.raises(ValueError, match="X_val has 4 features, expected 5"):
        fit_lgbm(Xtr, ytr, Xva[:, :4], yva, FAST)
    with pytest.raises(
        ValueError, match=r"X_train must be a non-empty 2-D array.*got shape \(4000,\)"
    ):
        fit_lgbm(Xtr[:, 0], ytr, Xva, yva, FAST)
    y_nan = yva.astype(float)
    y_nan[[3, 9]] = np.nan
    with pytest.raises(ValueError, match="y_val has 2 NaN labels"):
        fit_lgbm(Xtr, ytr, Xva, y_nan, FAST)
    with pytest.raises(
        ValueError, match=r"y_train must be 0/1 direction labels, got values \[-1.0\]"
    ):
        fit_lgbm(Xtr, np.where(ytr == 0, -1, 1), Xva, yva, FAST)
    with pytest.raises(ValueError, match="feature_names has 2 names, expected 5"):
        fit_lgbm(Xtr, ytr, Xva, yva, FAST, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="X has 3 features, expected 5"):
        predict_proba(booster, data["Xte"][:, :3])
    with pytest.raises(ValueError, match="not a LightGBM text model"):
        booster_from_text("{'pickle': 1}")
