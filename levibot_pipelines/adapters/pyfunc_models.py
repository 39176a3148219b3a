"""The two registered models as MLflow pyfunc models, logged from code (nothing pickled).

Each registered version of ``levibot-lgbm-{SYMBOL}`` and ``levibot-deep-{SYMBOL}`` is an MLflow
model whose ``python_model`` is a code file (``pyfunc_lgbm.py``, ``pyfunc_transformer.py``: one
``mlflow.models.set_model`` call on a class of this module) and whose ``artifacts`` are the files
the project writes anyway: LightGBM text, the torch ``state_dict`` (read back with
``weights_only=True``), JSON. ``adapters.registry`` packages them; anyone can load one with
``mlflow.pyfunc.load_model("models:/levibot-lgbm-BTCUSDT@champion")``. The predictions go
through the project's one inference path (``core.models.inference``), so a loaded model gives
the numbers the project computes on the same rows.

Input of both models: the feature rows of one symbol, oldest first, as a ``pandas.DataFrame``
with the ten ``FEATURE_COLUMNS`` of ``core.data.features`` (float64; other columns are ignored),
e.g. rows of the feature table ``levibot ingest`` builds. The logged signature names those
columns, so through ``mlflow.pyfunc`` a 2-D array must be wrapped first
(``pd.DataFrame(X, columns=FEATURE_COLUMNS)``); the classes here also take the array itself.
Outputs are float64 columns, indexed like the input rows they belong to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.models.calibration import Calibrator
from levibot_pipelines.core.models.inference import (
    TRANSFORMER_KEYS,
    lgbm_outputs,
    transformer_outputs,
)
from levibot_pipelines.core.models.lgbm import booster_from_text
from levibot_pipelines.core.models.transformer import (
    LevibotTransformer,
    load_model,
    state_dict_from_bytes,
)

# The model files, by artifact name (the logged model keeps them as ``artifacts/{file}``).
LGBM_ARTIFACTS: dict[str, str] = {
    "lgbm": "lgbm.txt",
    "calibrator": "calibrator.json",
    "meta": "meta.json",
}
TRANSFORMER_ARTIFACTS: dict[str, str] = {
    "state_dict": "state_dict.pt",
    "config": "config.json",
    "calibrator": "calibrator.json",
    "meta": "meta.json",
}
LGBM_OUTPUTS: tuple[str, ...] = ("p_up", "confidence")
TRANSFORMER_OUTPUTS: tuple[str, ...] = TRANSFORMER_KEYS
LGBM_CODE = Path(__file__).with_name("pyfunc_lgbm.py")
TRANSFORMER_CODE = Path(__file__).with_name("pyfunc_transformer.py")


def feature_matrix(model_input: Any) -> np.ndarray:
    """``(n, 10)`` float64 feature rows in ``FEATURE_COLUMNS`` order, from a DataFrame holding
    those columns (extra columns ignored) or a 2-D array already in that order. ``ValueError``
    naming the missing columns or the bad shape."""
    if isinstance(model_input, pd.DataFrame):
        missing = [c for c in FEATURE_COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(
                f"model input lacks feature columns {missing}; expected {list(FEATURE_COLUMNS)}"
            )
        model_input = model_input[list(FEATURE_COLUMNS)].to_numpy()
    X = np.asarray(model_input, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(FEATURE_COLUMNS):
        raise ValueError(
            f"model input must be (n, {len(FEATURE_COLUMNS)}) feature rows, got shape {X.shape}"
        )
    return X


def _index(model_input: Any, n: int) -> pd.Index:
    return model_input.index if isinstance(model_input, pd.DataFrame) else pd.RangeIndex(n)


def lgbm_frame(booster: Any, calibrator: Calibrator, model_input: Any) -> pd.DataFrame:
    """``LGBM_OUTPUTS`` of every input row (``core.models.inference.lgbm_outputs``): the
    calibrated ``p_up`` and its ``confidence`` ``|2p - 1|``, indexed like the input."""
    X = feature_matrix(model_input)
    if len(X) == 0:
        raise ValueError("model input has no rows")
    p, confidence = lgbm_outputs(booster, calibrator, X)
    return pd.DataFrame({"p_up": p, "confidence": confidence}, index=_index(model_input, len(X)))


def transformer_frame(
    model: LevibotTransformer,
    calibrator: Calibrator,
    model_input: Any,
    *,
    n_samples: int,
    seed: int,
) -> pd.DataFrame:
    """``TRANSFORMER_OUTPUTS`` (``core.models.inference.transformer_outputs``, ``n_samples``
    MC-dropout draws seeded by ``seed``) of every window of ``model.config.window`` consecutive
    input rows: one output row per input row that ends a full window (the last
    ``n - window + 1`` rows), indexed like those rows. ``ValueError`` for fewer than ``window``
    rows."""
    X = feature_matrix(model_input)
    window = model.config.window
    if len(X) < window:
        raise ValueError(
            f"model input has {len(X)} rows; the Transformer needs at least {window} consecutive "
            "feature rows (one full window)"
        )
    ends = np.arange(window - 1, len(X))
    out = transformer_outputs(model, calibrator, X, ends, n_samples=n_samples, seed=seed)
    index = _index(model_input, len(X))[window - 1 :]
    return pd.DataFrame({k: out[k] for k in TRANSFORMER_OUTPUTS}, index=index)


def _read(context: PythonModelContext, name: str) -> bytes:
    return Path(context.artifacts[name]).read_bytes()


def _calibrator(context: PythonModelContext) -> Calibrator:
    return Calibrator.from_dict(json.loads(_read(context, "calibrator")))


class LgbmPyfunc(PythonModel):
    """The LightGBM direction classifier with its calibrator.

    ``predict(model_input)``: feature rows (see the module docstring), any number ``n >= 1`` ->
    a DataFrame of ``n`` rows, ``p_up`` (calibrated P(up over the horizon)) and ``confidence``
    (``|2 p_up - 1|``). No params.
    """

    def load_context(self, context: PythonModelContext) -> None:
        self.booster = booster_from_text(_read(context, "lgbm").decode())
        self.calibrator = _calibrator(context)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return lgbm_frame(self.booster, self.calibrator, model_input)


class TransformerPyfunc(PythonModel):
    """The Transformer with its calibrator, predicting with MC dropout.

    ``predict(model_input, params)``: the consecutive feature rows of one symbol, oldest first,
    at least ``window`` of them (the model's ``config.json``; 128 in the seed profile), without
    gaps: each output row is the window of ``window`` rows ending at an input row, so ``n`` rows
    give ``n - window + 1`` output rows, indexed like the rows that end them. Columns (float64):
    ``p_up`` (calibrated MC-mean P(up)), ``mu`` (expected log return over the horizon),
    ``aleatoric``, ``epistemic``, ``epistemic_p``, ``total``, ``sigma = sqrt(total)`` and
    ``confidence`` (``core.models.inference.calibrated_outputs``).

    ``params`` (optional): ``n_samples`` MC draws per window (default: the ``mc_samples`` the
    model was trained and published with) and ``seed`` of the draws (default 0, the
    publisher's). The draws depend on which windows are predicted together: passing exactly the
    ``window`` rows ending at a bar, with the defaults, reproduces the published numbers of that
    bar.
    """

    def load_context(self, context: PythonModelContext) -> None:
        state = state_dict_from_bytes(_read(context, "state_dict"))
        self.model = load_model(state, json.loads(_read(context, "config")))
        self.calibrator = _calibrator(context)
        config = context.model_config or {}
        self.mc_samples = int(config["mc_samples"])
        self.seed = int(config.get("seed", 0))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        params = params or {}
        n_samples = params.get("n_samples")
        seed = params.get("seed")
        return transformer_frame(
            self.model,
            self.calibrator,
            model_input,
            n_samples=self.mc_samples if n_samples is None else int(n_samples),
            seed=self.seed if seed is None else int(seed),
        )
