"""The Transformer exported next to the published predictions, so the API can rerun MC dropout
without MLflow or DuckDB.

Layout: ``home/"published"/models/{SYMBOL}/deep/`` (``adapters.home.exported_transformer_dir``)
holds ``TRANSFORMER_EXPORT_FILES``: ``state_dict.pt``, ``config.json``, ``calibrator.json`` and
``meta.json`` (``{"version": "3", "name": "levibot-deep-BTCUSDT"}``). Each file is replaced
atomically and ``meta.json`` goes last, so a reader that sees a new version sees its other
files too; the directory is shared by consecutive publishes, so a reader checks ``meta.json``
against the published row's ``deep_version`` (``adapters.prediction_files`` writes the rows).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.home import exported_transformer_dir

TRANSFORMER_EXPORT_FILES: tuple[str, ...] = (
    "state_dict.pt",
    "config.json",
    "calibrator.json",
    "meta.json",
)


class PublishedFileError(ValueError):
    """A published file exists but cannot be used: half-written, corrupt, or another schema."""


def check_exported_models(
    rows: pl.DataFrame, transformer_exports: dict[str, dict[str, bytes]]
) -> None:
    """Every row's symbol has all ``TRANSFORMER_EXPORT_FILES`` and its meta names the row's version.

    ``rows``: published rows (columns ``symbol`` and ``deep_version``); ``transformer_exports``:
    symbol -> {file name: bytes}. Raises ``ValueError`` naming the symbol and what is wrong.
    """
    for sym, version in rows.select("symbol", "deep_version").iter_rows():
        files = transformer_exports.get(sym)
        if files is None:
            raise ValueError(
                f"no exported deep model for {sym}; got models for {list(transformer_exports)}"
            )
        absent = [f for f in TRANSFORMER_EXPORT_FILES if f not in files]
        unknown = [f for f in files if f not in TRANSFORMER_EXPORT_FILES]
        if absent or unknown:
            raise ValueError(
                f"deep model files for {sym}: missing {absent}, unexpected {unknown}; "
                f"expected {list(TRANSFORMER_EXPORT_FILES)}"
            )
        meta = json.loads(files["meta.json"])
        if str(meta.get("version")) != version:
            raise ValueError(
                f"{sym}: meta.json names version {meta.get('version')!r} but the row's "
                f"deep_version is {version!r}"
            )


def write_exported_model(home: Path | str, symbol: str, files: dict[str, bytes]) -> None:
    """Write ``files`` (checked by ``check_exported_models``) to the model directory of
    ``symbol``, each atomically; files whose bytes are unchanged are left alone."""
    directory = exported_transformer_dir(home, symbol)
    # meta.json goes last: a reader that sees the new version sees its other files too.
    for name in TRANSFORMER_EXPORT_FILES:
        path = directory / name
        if path.exists() and path.read_bytes() == files[name]:
            continue
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(files[name])
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)


def read_exported_transformer(home: Path | str, symbol: str) -> dict[str, bytes]:
    """The exported model files of ``symbol``; ``PublishedFileError`` when any is missing or the
    model was replaced while being read."""
    directory = exported_transformer_dir(home, symbol)
    missing = [f for f in TRANSFORMER_EXPORT_FILES if not (directory / f).exists()]
    if missing:
        raise PublishedFileError(
            f"no exported deep model for {symbol}: {directory} lacks {missing}"
        )
    meta = (directory / "meta.json").read_bytes()
    files = {f: (directory / f).read_bytes() for f in TRANSFORMER_EXPORT_FILES}
    if files["meta.json"] != meta:
        raise PublishedFileError(f"the deep model of {symbol} was replaced while reading; retry")
    return files


def load_exported_transformer(home: Path | str, symbol: str):
    """-> ``(LevibotTransformer, Calibrator, version)`` exported for ``symbol``.

    Weights load with ``weights_only=True`` (no pickle). Imports torch, so only call it where
    torch is wanted (the API imports this module without it).
    """
    from levibot_pipelines.core.models.calibration import Calibrator
    from levibot_pipelines.core.models.transformer import load_model, state_dict_from_bytes

    files = read_exported_transformer(home, symbol)
    try:
        config = json.loads(files["config.json"])
        calibrator = Calibrator.from_dict(json.loads(files["calibrator.json"]))
        meta = json.loads(files["meta.json"])
    except (json.JSONDecodeError, ValueError) as exc:
        raise PublishedFileError(f"exported deep model of {symbol} is corrupt: {exc}") from None
    model = load_model(state_dict_from_bytes(files["state_dict.pt"]), config)
    return model, calibrator, str(meta["version"])
