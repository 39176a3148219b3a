"""Model artifacts in the MLflow registry: how each model is packaged, registered as a model
version, and loaded back (no pickle: LightGBM text, torch ``state_dict`` loaded with
``weights_only=True``, JSON for the rest).

Each version of the two models is an MLflow pyfunc model logged from code
(``adapters.pyfunc_models``): the model files are its ``artifacts``, the code file its
``python_model``, the ``levibot_pipelines`` modules that code imports its ``code_paths`` (so a
service without this package loads it with ``mlflow.pyfunc.load_model`` and the pinned
``PYFUNC_REQUIREMENTS``), and it records a signature, an input example and, for the Transformer,
the MC sample count it predicts with. The project's own loaders read the same files back
(``adapters.model_versions.VersionRegistry.download_file``).
"""

from __future__ import annotations

import ast
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import lightgbm as lgb
import mlflow.pyfunc
import pandas as pd
from mlflow.models import Model, infer_signature
from mlflow.pyfunc import PythonModelContext

from levibot_pipelines.adapters.prediction_files import MC_SEED
from levibot_pipelines.adapters.pyfunc_models import (
    LGBM_ARTIFACTS,
    LGBM_CODE,
    TRANSFORMER_ARTIFACTS,
    TRANSFORMER_CODE,
    LgbmPyfunc,
    TransformerPyfunc,
)
from levibot_pipelines.adapters.run_log import ModelToLog, RunInfo
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.lgbm import booster_from_text, booster_to_text
from levibot_pipelines.core.models.transformer import (
    LevibotTransformer,
    load_model,
    save_model,
    state_dict_from_bytes,
    state_dict_to_bytes,
)

# What the pyfunc models need installed, pinned to the versions that logged them (torch without
# its local build label, e.g. ``+cpu``, so pip can resolve it from PyPI).
PYFUNC_REQUIREMENTS: tuple[str, ...] = (
    "mlflow",
    "lightgbm",
    "numpy",
    "pandas",
    "polars",
    "scikit-learn",
    "scipy",
    "torch",
)
_MODEL_DIR = "model/"
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_PACKAGE = _PACKAGE_DIR.name


def model_name(kind: str, symbol: str) -> str:
    """Registered model name, e.g. ``levibot-lgbm-BTCUSDT``."""
    return f"levibot-{kind}-{symbol}"


def lgbm_files(booster: lgb.Booster, calibrator: Calibrator, meta: dict) -> dict[str, str]:
    return {
        "model/lgbm.txt": booster_to_text(booster),
        "model/calibrator.json": json.dumps(calibrator.to_dict()),
        "model/meta.json": json.dumps(meta),
    }


def transformer_files(model: LevibotTransformer, calibrator: Calibrator, meta: dict) -> dict:
    state, config = save_model(model)
    return {
        "model/state_dict.pt": state_dict_to_bytes(state),
        "model/config.json": json.dumps(config),
        "model/calibrator.json": json.dumps(calibrator.to_dict()),
        "model/meta.json": json.dumps(meta),
    }


def _json(tracker: Tracker, name: str, version: str, path: str) -> dict:
    return json.loads(tracker.download_file(name, version, path))


def load_lgbm(tracker: Tracker, name: str, version: str) -> tuple[lgb.Booster, Calibrator]:
    text = tracker.download_file(name, version, "model/lgbm.txt").decode()
    calibrator = Calibrator.from_dict(_json(tracker, name, version, "model/calibrator.json"))
    return booster_from_text(text), calibrator


def load_transformer(
    tracker: Tracker, name: str, version: str
) -> tuple[LevibotTransformer, Calibrator]:
    return transformer_from_files(download_transformer(tracker, name, version))


DEEP_FILES = ("state_dict.pt", "config.json", "calibrator.json")


def download_transformer(tracker: Tracker, name: str, version: str) -> dict[str, bytes]:
    """The registered Transformer's files, by name: ``DEEP_FILES``."""
    return {f: tracker.download_file(name, version, f"model/{f}") for f in DEEP_FILES}


def transformer_from_files(files: dict[str, bytes]) -> tuple[LevibotTransformer, Calibrator]:
    """Rebuild the Transformer (``weights_only`` load) and its calibrator from ``DEEP_FILES``."""
    model = load_model(
        state_dict_from_bytes(files["state_dict.pt"]), json.loads(files["config.json"])
    )
    return model, Calibrator.from_dict(json.loads(files["calibrator.json"]))


def pip_requirements() -> list[str]:
    """``PYFUNC_REQUIREMENTS`` pinned to the installed versions, e.g. ``torch==2.13.0``."""
    return [f"{d}=={metadata.version(d).split('+')[0]}" for d in PYFUNC_REQUIREMENTS]


def _module_file(module: str) -> Path | None:
    """The file of package module ``module`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    rel = _PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for path in (rel / "__init__.py", rel.parent / f"{rel.name}.py"):
        if path.is_file():
            return path
    return None


def _imported_modules(path: Path) -> Iterator[str]:
    """Package modules (and ``from`` names that may be modules) imported anywhere in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        yield from (n for n in names if n.split(".")[0] == _PACKAGE)


def package_files(module: str) -> list[Path]:
    """The files of package ``module`` and of every package module it imports, directly or
    not, with the ``__init__.py`` of each package on the way: what the model code needs of
    ``levibot_pipelines`` (``adapters.pyfunc_models`` and the core modules under it)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imported_modules(path))
    return sorted(seen)


def _stage_package(dest: Path) -> Path:
    """Copy ``package_files`` of the pyfunc module into ``dest/levibot_pipelines``."""
    root = dest / _PACKAGE
    for path in package_files(f"{_PACKAGE}.adapters.pyfunc_models"):
        target = root / path.relative_to(_PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return root


@dataclass(frozen=True)
class _PyfuncKind:
    """One of the two models: its code file, its artifacts (name -> file) and model class."""

    code: Path
    artifacts: dict[str, str]
    model_class: type


_LGBM = _PyfuncKind(LGBM_CODE, LGBM_ARTIFACTS, LgbmPyfunc)
_TRANSFORMER = _PyfuncKind(TRANSFORMER_CODE, TRANSFORMER_ARTIFACTS, TransformerPyfunc)


def _write_pyfunc(
    path: Path,
    mlflow_model: Model,
    *,
    kind: _PyfuncKind,
    files: dict[str, bytes | str],
    model_config: dict | None,
    params: dict | None,
) -> None:
    """Save the pyfunc model of ``kind`` at ``path`` from its ``files`` (file name -> content),
    with ``model_config`` (read by its ``load_context``) and the ``params`` its ``predict`` takes
    (name -> default). The signature and the input example (zero feature rows: one window for
    the Transformer, two rows for LightGBM) come from the model itself, predicting on that
    example."""
    with tempfile.TemporaryDirectory(prefix="levibot-pyfunc-") as tmp:
        staging = Path(tmp)
        (staging / "artifacts").mkdir()
        artifacts = {}
        for name, file in kind.artifacts.items():
            target = staging / "artifacts" / file
            content = files[file]
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
            artifacts[name] = str(target)
        model = kind.model_class()
        model.load_context(PythonModelContext(artifacts, model_config))
        rows = model.model.config.window if isinstance(model, TransformerPyfunc) else 2
        example = pd.DataFrame(0.0, index=pd.RangeIndex(rows), columns=list(FEATURE_COLUMNS))
        output = model.predict(None, example, params)
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(kind.code),
            artifacts=artifacts,
            code_paths=[str(_stage_package(staging / "code"))],
            signature=infer_signature(example, output, params=params),
            input_example=example,
            pip_requirements=pip_requirements(),
            model_config=model_config,
            mlflow_model=mlflow_model,
        )


def _model_to_log(name: str, files: dict, params: dict) -> ModelToLog | None:
    """The pyfunc model packaged from the ``model/`` entries of ``files``: LightGBM when they
    hold ``lgbm.txt``, the Transformer when they hold ``state_dict.pt`` (its ``mc_samples`` is
    ``params["config"]["mc_samples"]``, its seed ``MC_SEED``); ``None`` for any other set of
    files, which stays a plain run folder. ``ValueError`` for a missing or unknown model file."""
    model_files = {p[len(_MODEL_DIR) :]: c for p, c in files.items() if p.startswith(_MODEL_DIR)}
    if "lgbm.txt" in model_files:
        kind, model_config, predict_params = _LGBM, None, None
    elif "state_dict.pt" in model_files:
        mc_samples = (params.get("config") or {}).get("mc_samples")
        if mc_samples is None:
            raise ValueError(
                f"{name}: params['config']['mc_samples'] is needed to package a Transformer "
                f"(the MC draws its pyfunc model predicts with); got params {sorted(params)}"
            )
        kind = _TRANSFORMER
        model_config = {"mc_samples": int(mc_samples), "seed": MC_SEED}
        predict_params = {"n_samples": int(mc_samples), "seed": MC_SEED}
    else:
        return None
    expected = set(kind.artifacts.values())
    if set(model_files) != expected:
        raise ValueError(
            f"{name}: model files {sorted(model_files)} are not the expected {sorted(expected)}"
        )

    def write(path: Path, mlflow_model: Model) -> None:
        _write_pyfunc(
            path,
            mlflow_model,
            kind=kind,
            files=model_files,
            model_config=model_config,
            params=predict_params,
        )

    return ModelToLog(name=name, write=write)


@dataclass(frozen=True)
class Registered:
    """A logged training run and the model version registered from its model."""

    run: RunInfo
    version: str


def register_model(
    tracker: Tracker,
    *,
    name: str,
    run_name: str,
    params: dict,
    metrics: dict[str, float],
    files: dict,
    window: str,
    epoch_metrics: list[dict] | None = None,
    tags: dict[str, str] | None = None,
) -> Registered:
    """Log the training run (``params``, ``metrics``, ``epoch_metrics``, ``tags`` and the
    ``files`` outside ``model/``) with its model, and register the model as a new version of
    ``name``, tagged with the test ``window`` it was scored on. The champion alias is not
    touched (see ``usecases.promote``).

    ``model/`` files from ``lgbm_files`` or ``transformer_files`` become a pyfunc model of the
    run (a Transformer needs ``params["config"]["mc_samples"]``), the version's source; any
    other ``model/`` files are logged in the run and its ``model/`` folder is registered.
    """
    model = _model_to_log(name, files, params)
    if model is not None:
        files = {p: c for p, c in files.items() if not p.startswith(_MODEL_DIR)}
    run = tracker.log_training_run(
        run_name=run_name,
        params=params,
        metrics=metrics,
        epoch_metrics=epoch_metrics,
        files=files,
        tags=tags,
        model=model,
    )
    version = tracker.register_version(name, run, tags={"window": window})
    return Registered(run=run, version=version)
