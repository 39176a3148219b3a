"""The layout of ``LEVIBOT_HOME``: every path the pipeline writes under it, in one place.

These paths are part of the users' interface (services and people read the files), so each is
built here once; the file formats live with their adapters. Pure path arithmetic: nothing is
created or read.

```
{home}/ohlcv/{SYMBOL}.parquet                          stored bars (adapters.store)
{home}/features/cross_asset_features.parquet           the feature table
{home}/warehouse.duckdb, {home}/dagster/               DuckDB views, the Dagster instance
{home}/mlflow.db, {home}/mlartifacts/                  embedded MLflow store
{home}/models/{SYMBOL}/ensemble.json                   the champions' ensemble weight
{home}/models/{SYMBOL}/{kind}_test_predictions.parquet a retrain's test-window predictions
{home}/reports/{SYMBOL}/report.json (.md, plots/)      model_report
{home}/published/latest_predictions.json (.parquet)    what the API serves
{home}/published/history/predictions-*.parquet         append-only prediction history
{home}/published/models/{SYMBOL}/deep/                 the exported champion Transformer
{home}/published/shadow/latest_predictions.json (.parquet)  the shadow challengers (never traded)
{home}/published/shadow/history/predictions-*.parquet  append-only shadow history
{home}/kill_switch.json, kill_switch_history.jsonl     the kill-switch (adapters.killswitch_store)
{home}/live/scores/scores-*.parquet                    append-only live scores (adapters.live_files)
{home}/live/shadow_scores/scores-*.parquet             the same for the shadow challengers
{home}/live/summary.json                               rolling live scores per symbol and model
{home}/live/recalibration.json                         live recalibration maps, stages, drift
{home}/locks/ohlcv-{SYMBOL}.lock                       held while a symbol's bars are upserted
```

The data files (``ohlcv/``, ``features/``, ``reports/``, ``published/`` except
``published/models/``) live in the data root (``adapters.object_store``): the home by default,
or the bucket prefix of ``LEVIBOT_DATA_URL`` (``s3://bucket/prefix``) under the same keys, the
paths above relative to the home (``ohlcv_key``, ``FEATURES_KEY``, ``report_key``,
``PUBLISHED``...). Everything else (the Dagster instance, MLflow, the kill-switch, the models'
``ensemble.json``, the exported Transformer, ``live/`` and the locks) stays under the home.
"""

from __future__ import annotations

from pathlib import Path

# Keys of the data files in the data root (relative to the home when it is local).
OHLCV = "ohlcv"
FEATURES_KEY = "features/cross_asset_features.parquet"
REPORTS = "reports"
PUBLISHED = "published"
HISTORY = f"{PUBLISHED}/history"
SHADOW = f"{PUBLISHED}/shadow"
SHADOW_HISTORY = f"{SHADOW}/history"
HISTORY_FILE_PREFIX = "predictions-"  # history files: predictions-{published_at}-{uuid8}.parquet


def ohlcv_key(symbol: str) -> str:
    return f"{OHLCV}/{symbol}.parquet"


def report_prefix(symbol: str) -> str:
    """Where ``model_report`` writes a symbol's report in the data root."""
    return f"{REPORTS}/{symbol}"


def report_key(symbol: str) -> str:
    return f"{report_prefix(symbol)}/report.json"


def dagster_dir(home: Path | str) -> Path:
    """The Dagster instance (``DAGSTER_HOME``) that ``make dev`` and ``levibot demo`` share."""
    return Path(home) / "dagster"


def warehouse_path(home: Path | str) -> Path:
    """The DuckDB file with the SQL views over the Parquet files."""
    return Path(home) / "warehouse.duckdb"


def mlflow_tracking_uri(home: Path | str, configured: str | None = None) -> str:
    """``configured`` (LEVIBOT_MLFLOW_TRACKING_URI, e.g. a tracking server) when set, else the
    embedded sqlite store ``sqlite:///{home}/mlflow.db``."""
    return configured or f"sqlite:///{Path(home) / 'mlflow.db'}"


def kill_switch_path(home: Path | str) -> Path:
    """The kill-switch state; its audit log and lock file sit beside it."""
    return Path(home) / "kill_switch.json"


def kill_switch_history_path(home: Path | str) -> Path:
    return Path(home) / "kill_switch_history.jsonl"


def kill_switch_lock_path(home: Path | str) -> Path:
    return Path(home) / "kill_switch.lock"


def ohlcv_dir(home: Path | str) -> Path:
    return Path(home) / OHLCV


def ohlcv_lock_path(home: Path | str, symbol: str) -> Path:
    """Held by every upsert of ``symbol``'s stored bars (``adapters.file_lock``)."""
    return Path(home) / "locks" / f"ohlcv-{symbol}.lock"


def features_path(home: Path | str) -> Path:
    return Path(home) / FEATURES_KEY


def mlartifacts_dir(home: Path | str) -> Path:
    """Artifact root of the embedded MLflow store."""
    return Path(home) / "mlartifacts"


def models_dir(home: Path | str, symbol: str) -> Path:
    return Path(home) / "models" / symbol


def ensemble_weights_path(home: Path | str, symbol: str) -> Path:
    return models_dir(home, symbol) / "ensemble.json"


def predictions_path(home: Path | str, symbol: str, kind: str) -> Path:
    """A retrain's test-window predictions of model ``kind`` (``lgbm`` or ``deep``)."""
    return models_dir(home, symbol) / f"{kind}_test_predictions.parquet"


def report_dir(home: Path | str, symbol: str) -> Path:
    """Where ``model_report`` writes a symbol's report (``report.json``, ``report.md``, plots)."""
    return Path(home) / report_prefix(symbol)


def report_json(home: Path | str, symbol: str) -> Path:
    return Path(home) / report_key(symbol)


def published_dir(home: Path | str) -> Path:
    return Path(home) / PUBLISHED


def history_dir(home: Path | str) -> Path:
    return Path(home) / HISTORY


def history_glob(home: Path | str) -> str:
    """Glob (POSIX string) matching every history file, e.g. for a DuckDB ``read_parquet``."""
    return (history_dir(home) / f"{HISTORY_FILE_PREFIX}*.parquet").as_posix()


def shadow_dir(home: Path | str) -> Path:
    """The shadow challengers' published predictions (``adapters.prediction_files``): the same
    files as ``published_dir``, scored live, never traded."""
    return Path(home) / SHADOW


def shadow_history_dir(home: Path | str) -> Path:
    return Path(home) / SHADOW_HISTORY


def exported_transformer_dir(home: Path | str, symbol: str) -> Path:
    """The exported champion Transformer of ``symbol`` (what the API recomputes with)."""
    return published_dir(home) / "models" / symbol / "deep"


def live_dir(home: Path | str) -> Path:
    """Live scoring of the published predictions (``adapters.live_files``)."""
    return Path(home) / "live"


def live_scores_dir(home: Path | str) -> Path:
    """The append-only scored history: one ``scores-{now}-{uuid8}.parquet`` per scoring run."""
    return live_dir(home) / "scores"


def live_shadow_scores_dir(home: Path | str) -> Path:
    """The append-only scored history of the shadow challengers (same layout as
    ``live_scores_dir``)."""
    return live_dir(home) / "shadow_scores"


def live_summary_path(home: Path | str) -> Path:
    """The rolling live scores per symbol and model (what the API's gauges read)."""
    return live_dir(home) / "summary.json"


def live_recalibration_path(home: Path | str) -> Path:
    """The live recalibration's maps, their stages and history, and the calibration drift
    (``adapters.recal_files``)."""
    return live_dir(home) / "recalibration.json"
