"""``levibot smoke``'s checks (the seed's ``smoke_test.sh``): models trained, calibration
complete, published predictions current, API responding.

Each check returns :class:`Step` records (one per symbol where it is per symbol); the CLI runs
whatever pipeline step is missing (through Dagster) and starts the API, these functions only
look. Reads the MLflow registry (``adapters.tracking``), the feature table and the published
predictions; the API is requested over HTTP with the standard library.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.object_store import DataRoot
from levibot_pipelines.adapters.prediction_files import read_latest
from levibot_pipelines.adapters.registry import model_name
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.models.calibration import Calibrator

KINDS = ("lgbm", "deep")


@dataclass(frozen=True)
class Step:
    """One smoke-test step: what was checked, whether it passed, and what was seen."""

    name: str
    passed: bool
    detail: str


def champions(tracker: Tracker, symbol: str) -> dict[str, str]:
    """``{"lgbm": version, "deep": version}`` of the champions of ``symbol`` that exist."""
    found = {kind: tracker.champion(model_name(kind, symbol)) for kind in KINDS}
    return {kind: champ[0] for kind, champ in found.items() if champ is not None}


def model_steps(tracker: Tracker, symbols: Sequence[str]) -> list[Step]:
    """Per symbol: "model trained" (a champion version of both models in the registry) and
    "calibration complete" (each champion's calibrator was fitted on calibration bars)."""
    steps = []
    for symbol in symbols:
        versions = champions(tracker, symbol)
        missing = [model_name(kind, symbol) for kind in KINDS if kind not in versions]
        names = ", ".join(f"{model_name(k, symbol)} v{v}" for k, v in versions.items())
        steps.append(
            Step(
                f"model trained ({symbol})",
                not missing,
                f"no champion of {', '.join(missing)}: run levibot train --symbol {symbol}"
                if missing
                else f"champions {names}",
            )
        )
        if not missing:
            steps.append(_calibration_step(tracker, symbol, versions))
    return steps


def _calibration_step(tracker: Tracker, symbol: str, versions: dict[str, str]) -> Step:
    """Each champion's ``model/calibrator.json``: fitted on how many bars, which method."""
    seen, unfitted = [], []
    for kind, version in versions.items():
        raw = tracker.download_file(model_name(kind, symbol), version, "model/calibrator.json")
        calibrator = Calibrator.from_dict(json.loads(raw))
        seen.append(f"{kind} {calibrator.method} on {calibrator.n_fit} bars")
        if calibrator.n_fit < 1:
            unfitted.append(model_name(kind, symbol))
    detail = "; ".join(seen)
    if unfitted:
        detail = f"not fitted on calibration bars: {', '.join(unfitted)} ({detail})"
    return Step(f"calibration complete ({symbol})", not unfitted, detail)


def publish_reason(
    home: Path, tracker: Tracker, symbols: Sequence[str], root: DataRoot | None = None
) -> str | None:
    """Why the published predictions are not current, or None when they are: nothing
    published, a symbol without a row, a row from other model versions than the champions, or
    a row older than the symbol's newest feature row. ``root``: where the published rows and
    the features are (default: the home)."""
    latest = read_latest(home if root is None else root)
    if latest is None:
        return "nothing is published yet"
    features = ParquetStore(home, root).read_features(columns=["symbol", "timestamp"])
    newest = dict(features.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows())
    for symbol in symbols:
        row = latest.rows.get(symbol)
        if row is None:
            return f"no published row for {symbol}"
        versions = champions(tracker, symbol)
        published = {"lgbm": row["lgbm_version"], "deep": row["deep_version"]}
        if published != versions:
            return f"{symbol} was published by {published}, the champions are {versions}"
        if row["bar_time"] < newest.get(symbol, row["bar_time"]):
            return f"{symbol}'s published bar is older than its newest feature row"
    return None


def api_steps(
    base_url: str, symbols: Sequence[str], token: str | None, timeout_s: float = 30.0
) -> list[Step]:
    """ "API responding": ``/healthz`` answers 200 with status ok, and ``/ml/predict_deep``
    answers 200 with a ``p_up`` in [0, 1] for every symbol. ``token``: the bearer token when
    the API requires one (LEVIBOT_API_TOKEN)."""
    code, body = _get(f"{base_url}/healthz", token, timeout_s)
    healthy = code == 200 and body.get("status") == "ok"
    reasons = "; ".join(body.get("reasons", [])) or body.get("detail", "")
    steps = [Step("API /healthz", healthy, f"{code} {body.get('status', '')} {reasons}".strip())]
    for symbol in symbols:
        query = urllib.parse.urlencode({"symbol": symbol})
        code, body = _get(f"{base_url}/ml/predict_deep?{query}", token, timeout_s)
        p_up = body.get("p_up")
        passed = code == 200 and isinstance(p_up, float | int) and 0.0 <= p_up <= 1.0
        detail = (
            f"200 p_up={p_up:.4f} signal={body.get('signal')} model v{body.get('model_version')}"
            if passed
            else f"{code} {body.get('detail', body)}"
        )
        steps.append(Step(f"API /ml/predict_deep ({symbol})", passed, detail))
    return steps


def _get(url: str, token: str | None, timeout_s: float) -> tuple[int, dict]:
    """(status code, JSON body) of GET ``url``; code 0 and ``{"detail": why}`` when no HTTP
    answer came back (connection refused, timeout)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"detail": exc.reason}
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        return 0, {"detail": f"no answer from {url}: {getattr(exc, 'reason', exc)}"}
