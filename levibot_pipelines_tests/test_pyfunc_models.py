"""The registered models as MLflow pyfunc models: registered through the project's own path
(``register_model`` + ``promote_champion``), then loaded with ``mlflow.pyfunc.load_model`` in a
fresh interpreter that does not have this package (as a user's service would), predicting what
the project predicts on the same rows. Nothing pickled. Tiny models, a real local store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from urllib.parse import unquote, urlparse

# Telemetry must be off before mlflow is first imported (it starts its client on import).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from levibot_pipelines.adapters.pyfunc_models import lgbm_frame, transformer_frame  # noqa: E402
from levibot_pipelines.adapters.registry import (  # noqa: E402
    download_transformer,
    lgbm_files,
    load_lgbm,
    load_transformer,
    model_name,
    register_model,
    transformer_files,
)
from levibot_pipelines.adapters.tracking import Tracker  # noqa: E402
from levibot_pipelines.core.data.features import FEATURE_COLUMNS  # noqa: E402
from levibot_pipelines.core.models.calibration import Calibrator, fit_calibrator  # noqa: E402
from levibot_pipelines.core.models.inference import (  # noqa: E402
    TRANSFORMER_KEYS,
    lgbm_outputs,
    transformer_outputs,
)
from levibot_pipelines.core.models.lgbm import LGBMConfig, fit_lgbm, predict_proba  # noqa: E402
from levibot_pipelines.core.models.transformer import (  # noqa: E402
    LevibotTransformer,
    TransformerConfig,
)
from levibot_pipelines.settings import ModelSettings  # noqa: E402
from levibot_pipelines.usecases.promote import promote_champion  # noqa: E402

SYMBOL = "BTCUSDT"
LGBM, DEEP = model_name("lgbm", SYMBOL), model_name("deep", SYMBOL)
WINDOW = "2025-01-01T00:00/2025-02-01T00:00"
MC_SAMPLES = 5
N_ROWS = 20  # rows sent to the loaded models; the Transformer's window is 8

# What a user's service runs: no levibot_pipelines, only the pip requirements of the models.
USER_SCRIPT = """
import importlib.util, json, sys
args = json.loads(sys.argv[1])
sys.path.extend(args["site"])  # the interpreter runs with -S: no .pth, so no editable install
assert importlib.util.find_spec("levibot_pipelines") is None, "package must be absent"
import mlflow, numpy as np, pandas as pd

rows = pd.DataFrame(np.load(args["rows"]), columns=args["columns"])
rows.index = pd.RangeIndex(100, 100 + len(rows))
rows["symbol"] = "BTCUSDT"  # another column: ignored

def frame(df):
    return {"index": [int(i) for i in df.index], "columns": {c: df[c].tolist() for c in df}}

lgbm = mlflow.pyfunc.load_model("models:/levibot-lgbm-BTCUSDT@champion")
lgbm_v1 = mlflow.pyfunc.load_model("models:/levibot-lgbm-BTCUSDT/1")
deep = mlflow.pyfunc.load_model("models:/levibot-deep-BTCUSDT@champion")
deep_v1 = mlflow.pyfunc.load_model("models:/levibot-deep-BTCUSDT/1")
out = {
    "lgbm": frame(lgbm.predict(rows)),
    "lgbm_v1": frame(lgbm_v1.predict(rows)),
    "deep": frame(deep.predict(rows)),
    "deep_params": frame(deep.predict(rows, params={"n_samples": 3, "seed": 11})),
    "deep_last_window": frame(deep_v1.predict(rows.iloc[-8:])),
    "package": sys.modules["levibot_pipelines"].__file__,
}
print(json.dumps(out))
"""


def _tiny_lgbm(X: np.ndarray, y: np.ndarray, method: str):
    cfg = LGBMConfig(n_estimators=20, min_child_samples=10, num_threads=1)
    booster = fit_lgbm(X[:200], y[:200], X[200:], y[200:], cfg, seed=0)
    return booster, fit_calibrator(predict_proba(booster, X[200:]), y[200:], method)


def _tiny_transformer(X: np.ndarray, y: np.ndarray) -> tuple[LevibotTransformer, Calibrator]:
    torch.manual_seed(0)
    cfg = TransformerConfig(window=8, d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.2)
    model = LevibotTransformer(cfg)
    model.set_scaling(X.mean(axis=0), X.std(axis=0), target_scale=0.01)
    p = np.random.default_rng(1).uniform(0.2, 0.8, size=len(y))
    return model, fit_calibrator(p, y, "platt")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(FEATURE_COLUMNS)))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(np.float64)
    return X, y


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data) -> dict:
    """Two LightGBM versions (the second, better one becomes champion) and one Transformer,
    registered and promoted as ``usecases.train`` does."""
    X, y = data
    tracker = Tracker.for_home(tmp_path_factory.mktemp("home"), ui_base=ModelSettings().mlflow_ui)
    models = {
        (LGBM, "1"): _tiny_lgbm(X, y, "identity"),
        (LGBM, "2"): _tiny_lgbm(X, y, "platt"),
        (DEEP, "1"): _tiny_transformer(X, y),
    }
    runs = {}
    for (name, version), (model, calibrator), log_loss in zip(
        models, models.values(), (0.69, 0.68, 0.69), strict=True
    ):
        kind = "lgbm" if name == LGBM else "deep"
        to_files = lgbm_files if kind == "lgbm" else transformer_files
        registered = register_model(
            tracker,
            name=name,
            run_name=f"{kind}-{SYMBOL}",
            params={"symbol": SYMBOL, "config": {"mc_samples": MC_SAMPLES, "seed": 0}},
            metrics={"log_loss": log_loss},
            files={**to_files(model, calibrator, {"symbol": SYMBOL}), "plots/r.png": b"png"},
            window=WINDOW,
            tags={"symbol": SYMBOL, "kind": kind},
        )
        assert registered.version == version
        decision = promote_champion(
            tracker, name, version, value=log_loss, window=WINDOW, score_version=lambda v: 0.7
        )
        assert decision["promoted"]
        runs[name, version] = registered.run
    return {"tracker": tracker, "models": models, "runs": runs}


@pytest.fixture(scope="module")
def user_outputs(store, data, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What ``USER_SCRIPT`` printed, run in a fresh ``python -S`` on the store."""
    X, _ = data
    work = tmp_path_factory.mktemp("user")
    np.save(work / "rows.npy", X[-N_ROWS:])
    paths = sysconfig.get_paths()
    args = {
        "site": sorted({paths["purelib"], paths["platlib"]}),
        "rows": str(work / "rows.npy"),
        "columns": list(FEATURE_COLUMNS),
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env |= {
        "MLFLOW_TRACKING_URI": store["tracker"].tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    out = subprocess.run(
        [sys.executable, "-S", "-c", USER_SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        check=False,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _frame(out: dict) -> pd.DataFrame:
    return pd.DataFrame(out["columns"], index=out["index"])


def test_lgbm_champion_predicts_as_the_project(store, data, user_outputs) -> None:
    X, _ = data
    rows = X[-N_ROWS:]
    for key, version in (("lgbm", "2"), ("lgbm_v1", "1")):
        booster, calibrator = store["models"][LGBM, version]
        p, confidence = lgbm_outputs(booster, calibrator, rows)
        got = _frame(user_outputs[key])
        assert list(got.columns) == ["p_up", "confidence"]
        assert list(got.index) == list(range(100, 100 + N_ROWS))
        np.testing.assert_allclose(got["p_up"], p, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["confidence"], confidence, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got["confidence"], np.abs(2 * got["p_up"] - 1), atol=1e-12)
    # The alias, not the newest or the first version: v2's Platt calibration moves p.
    assert not np.allclose(
        user_outputs["lgbm"]["columns"]["p_up"], user_outputs["lgbm_v1"]["columns"]["p_up"]
    )


def test_transformer_champion_predicts_as_the_project(store, data, user_outputs) -> None:
    X, _ = data
    rows = X[-N_ROWS:]
    model, calibrator = store["models"][DEEP, "1"]
    ends = np.arange(7, N_ROWS)  # every row that ends a full window of 8
    for key, n_samples, seed in (("deep", MC_SAMPLES, 0), ("deep_params", 3, 11)):
        want = transformer_outputs(model, calibrator, rows, ends, n_samples=n_samples, seed=seed)
        got = _frame(user_outputs[key])
        assert list(got.index) == list(range(107, 100 + N_ROWS))
        assert set(got.columns) == set(TRANSFORMER_KEYS)
        for k in TRANSFORMER_KEYS:
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-6, err_msg=f"{key} {k}")
    # The params are used: other draws, other numbers.
    assert not np.allclose(
        user_outputs["deep"]["columns"]["p_up"], user_outputs["deep_params"]["columns"]["p_up"]
    )
    # Exactly one window, the defaults: the publisher's numbers for the newest bar.
    one = transformer_outputs(model, calibrator, rows, np.array([N_ROWS - 1]), n_samples=5, seed=0)
    got = _frame(user_outputs["deep_last_window"])
    assert list(got.index) == [100 + N_ROWS - 1]
    np.testing.assert_allclose(got["p_up"], one["p_up"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["sigma"], one["sigma"], rtol=0, atol=1e-6)


def test_the_models_bring_their_own_code(store, user_outputs) -> None:
    """The user's interpreter ran the package modules shipped inside the first model it loaded
    (the LightGBM champion, version 2)."""
    package = Path(user_outputs["package"])
    code = _model_dir(store, LGBM, "2") / "code"
    assert package == code / "levibot_pipelines" / "__init__.py"


def _model_dir(store, name: str, version: str) -> Path:
    source = MlflowClient(tracking_uri=store["tracker"].tracking_uri).get_model_version(
        name, version
    )
    assert source.source.startswith("file://")
    return Path(unquote(urlparse(source.source).path))


@pytest.mark.parametrize(
    ("name", "files", "code"),
    [
        (LGBM, {"lgbm.txt", "calibrator.json", "meta.json"}, "pyfunc_lgbm.py"),
        (
            DEEP,
            {"state_dict.pt", "config.json", "calibrator.json", "meta.json"},
            "pyfunc_transformer.py",
        ),
    ],
)
def test_the_logged_models_hold_no_pickle(store, name, files, code) -> None:
    root = _model_dir(store, name, "1")
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert not [f for f in found if f.endswith((".pkl", ".pickle")) or "python_model" in f]
    assert {f.split("/", 1)[1] for f in found if f.startswith("artifacts/")} == files
    assert code in found
    shipped = {f for f in found if f.startswith("code/")}
    assert "code/levibot_pipelines/core/models/inference.py" in shipped
    assert "code/levibot_pipelines/adapters/pyfunc_models.py" in shipped
    assert not [f for f in shipped if "/usecases/" in f or "/defs/" in f or "settings" in f]
    flavor = yaml.safe_load((root / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in flavor
    requirements = (root / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements
    assert any(r.startswith("lightgbm==") for r in requirements)
    if name == DEEP:
        assert flavor["config"] == {"mc_samples": MC_SAMPLES, "seed": 0}
        state = torch.load(root / "artifacts" / "state_dict.pt", weights_only=True)
        assert "target_scale" in state


def test_project_loaders_read_the_logged_model(store, data) -> None:
    X, _ = data
    tracker = store["tracker"]
    booster, calibrator = load_lgbm(tracker, LGBM, "2")
    want = lgbm_outputs(*store["models"][LGBM, "2"], X)
    np.testing.assert_array_equal(lgbm_outputs(booster, calibrator, X)[0], want[0])
    model, calibrator = load_transformer(tracker, DEEP, "1")
    original, _ = store["models"][DEEP, "1"]
    assert model.config == original.config
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in model.state_dict().items())
    files = download_transformer(tracker, DEEP, "1")
    assert json.loads(files["config.json"])["window"] == 8
    assert json.loads(tracker.download_file(DEEP, "1", "model/meta.json")) == {"symbol": SYMBOL}
    # The run keeps its params and plots; the model files live only in the logged model.
    run = store["runs"][DEEP, "1"]
    reader = MlflowClient(tracking_uri=tracker.tracking_uri)
    assert {f.path for f in reader.list_artifacts(run.run_id)} == {"config.json", "plots"}
    version = reader.get_model_version(DEEP, "1")
    assert version.run_id == run.run_id
    assert version.source == reader.get_logged_model(run.model_id).artifact_location


def test_the_input_contract(store, data) -> None:
    X, _ = data
    rows = pd.DataFrame(X[:10], columns=list(FEATURE_COLUMNS))
    booster, calibrator = store["models"][LGBM, "2"]
    with pytest.raises(ValueError, match=r"lacks feature columns \['z_20'\]"):
        lgbm_frame(booster, calibrator, rows.drop(columns="z_20"))
    model, calibrator = store["models"][DEEP, "1"]
    with pytest.raises(ValueError, match="has 7 rows; the Transformer needs at least 8"):
        transformer_frame(model, calibrator, rows.iloc[:7], n_samples=2, seed=0)
    assert len(transformer_frame(model, calibrator, rows, n_samples=2, seed=0)) == 3


def test_a_transformer_needs_its_mc_samples(store) -> None:
    model, calibrator = store["models"][DEEP, "1"]
    with pytest.raises(ValueError, match=r"mc_samples"):
        register_model(
            store["tracker"],
            name="no-mc",
            run_name="r",
            params={},
            metrics={},
            files=transformer_files(model, calibrator, {}),
            window=WINDOW,
        )
    files = {**lgbm_files(*store["models"][LGBM, "1"], {}), "model/extra.json": "{}"}
    with pytest.raises(ValueError, match="extra.json"):
        register_model(
            store["tracker"],
            name="x",
            run_name="r",
            params={},
            metrics={},
            files=files,
            window=WINDOW,
        )
