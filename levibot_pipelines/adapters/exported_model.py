"""The Transformer exported next to the published predictions, so the API can rerun MC dropout
without MLflow or DuckDB.

Layout under ``home/"published"/models/{SYMBOL}/``: ``deep-v{version}-{uuid8}/`` holds
``TRANSFORMER_EXPORT_FILES`` of one export: ``state_dict.pt``, ``config.json``,
``calibrator.json`` and ``meta.json`` (``{"version": "3", "name": "levibot-deep-BTCUSDT"}``),
never modified once there; ``deep`` (``adapters.home.exported_transformer_dir``) is a relative
symlink to the current one, swapped atomically, so ``deep/meta.json`` keeps working for people
and services. A reader resolves the pointer once (``current_export_dir``) and reads all four
files from that directory, so it never mixes two versions; the current and the previous
version directories are kept, so one that resolved the previous version can finish. A reader still
checks ``meta.json`` against the published row's ``deep_version``, because the pointer moves
before the rows are replaced (``adapters.prediction_files`` writes the rows). A flat ``deep/``
directory written by an older release is read as is and replaced by the pointer at the next
publish.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.home import exported_transformer_dir
from levibot_pipelines.adapters.store import fsync_dir

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
    """Publish ``files`` (checked by ``check_exported_models``) as the model of ``symbol``.

    Unchanged bytes (all four equal to the current export's) write nothing. Otherwise the
    files go to a new ``deep-v{version}-{uuid8}/`` (written and fsync'd under a temporary name,
    then renamed), the ``deep`` symlink is swapped to it with one ``os.replace``, and version
    directories other than the new and the previous one are removed.
    """
    pointer = exported_transformer_dir(home, symbol)
    try:
        if read_exported_transformer(home, symbol) == files:
            return
    except PublishedFileError:
        pass  # nothing exported yet, or half of an old export: write a new one
    version = "".join(ch for ch in str(json.loads(files["meta.json"])["version"]) if ch.isalnum())
    target = _write_version_dir(pointer.parent, f"deep-v{version}-{uuid.uuid4().hex[:8]}", files)
    previous = current_export_dir(home, symbol)
    if previous == pointer and pointer.is_dir():  # the flat directory of older releases
        previous = pointer.rename(pointer.with_name(f"deep-v0-flat-{uuid.uuid4().hex[:8]}"))
    link = pointer.with_name(f".deep.{uuid.uuid4().hex}.tmp")
    link.symlink_to(target.name, target_is_directory=True)  # relative: the tree can move
    try:
        os.replace(link, pointer)
    finally:
        link.unlink(missing_ok=True)
    fsync_dir(pointer.parent)
    _remove_old_versions(pointer.parent, keep={target.name, previous.name})


def _write_version_dir(parent: Path, name: str, files: dict[str, bytes]) -> Path:
    """``parent/name`` holding ``files``, each fsync'd, created under a temporary name and
    renamed whole, so the directory never exists half-written."""
    tmp = parent / f".{name}.tmp"
    tmp.mkdir(parents=True)
    try:
        for fname in TRANSFORMER_EXPORT_FILES:
            with open(tmp / fname, "wb") as fh:
                fh.write(files[fname])
                fh.flush()
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        tmp.rename(parent / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return parent / name


def _remove_old_versions(parent: Path, keep: set[str]) -> None:
    """Delete the ``deep-v*`` directories not named in ``keep`` (the current version and the
    one the pointer named before it): a reader that resolved the previous
    version a moment ago can still read it. Also removes exports a crashed writer left."""
    for old in parent.glob("deep-v*"):
        if old.name not in keep and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)


def current_export_dir(home: Path | str, symbol: str) -> Path:
    """The version directory the ``deep`` pointer of ``symbol`` names now (resolve it once,
    then read every file from it); the ``deep`` directory itself in the old flat layout."""
    pointer = exported_transformer_dir(home, symbol)
    try:
        return pointer.parent / os.readlink(pointer)
    except OSError:
        return pointer  # missing (the read names it) or a plain directory


def read_export_dir(directory: Path, symbol: str) -> dict[str, bytes]:
    """The exported model files in ``directory`` (from :func:`current_export_dir`);
    ``PublishedFileError`` when any is missing."""
    missing = [f for f in TRANSFORMER_EXPORT_FILES if not (directory / f).exists()]
    if missing and directory.name.startswith("deep-v") and not directory.exists():
        raise PublishedFileError(f"the deep model of {symbol} was replaced while reading; retry")
    if missing:
        raise PublishedFileError(
            f"no exported deep model for {symbol}: {directory} lacks {missing}"
        )
    try:
        return {f: (directory / f).read_bytes() for f in TRANSFORMER_EXPORT_FILES}
    except FileNotFoundError:  # removed as an old version between the check and the read
        raise PublishedFileError(
            f"the deep model of {symbol} was replaced while reading; retry"
        ) from None


def read_exported_transformer(home: Path | str, symbol: str) -> dict[str, bytes]:
    """The exported model files of ``symbol``, all from the one version directory the pointer
    named when read; ``PublishedFileError`` when any is missing."""
    return read_export_dir(current_export_dir(home, symbol), symbol)


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


def exported_version(home: Path | str, symbol: str) -> str | None:
    """Version named by the current export's ``meta.json``; None when absent or unreadable."""
    try:
        meta = json.loads((current_export_dir(home, symbol) / "meta.json").read_text())
        return str(meta["version"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
