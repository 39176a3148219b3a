"""Where the data files live: a local directory (``LEVIBOT_HOME``, the default) or an S3 bucket.

A :class:`DataRoot` holds the stored bars, the feature table, the reports and the published
predictions under keys that are the files' paths relative to the home (``adapters.home``:
``ohlcv/BTCUSDT.parquet``, ``published/latest_predictions.json``, ...). ``open_root`` picks the
implementation from ``LEVIBOT_DATA_URL``: empty (default) -> :class:`LocalRoot` on the home,
``s3://bucket/prefix`` -> :class:`S3Root`. Every reader and writer of those files goes through
the same methods, so the laptop and the cluster share one code path.

Atomic writes, both ways: ``LocalRoot`` writes a temporary sibling, flushes it, renames it over
the target and flushes the directory (after a crash the old or the new file, never a torn one);
``S3Root`` sends the whole object in ONE ``PutObject`` with its ``Content-MD5`` (never a multipart
upload), so a failed or cut-off request leaves the previous object in place and the server
rejects a body that does not match its digest. An object store has no rename, so a reader
never sees a half-written object under the final key.

Credentials: ``S3Root`` uses boto3's default chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, an
instance role, ...), never a value from a file or a setting. Errors (``ObjectStoreError``, an
``OSError``) name the URL of the object and the server's error code; any credential value is
replaced by ``***`` before a message is built.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger(__name__)

ORPHAN_AGE_S = 3600  # a temporary file this old was left by a writer that died mid-write
PARALLEL_GETS = 16  # concurrent GETs when many objects are read at once (the history)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")


class ObjectStoreError(OSError):
    """An object-store request failed (unreachable, denied, no such bucket): the message names
    the object's URL and the server's error code, never a credential."""


# ----------------------------------------------------------------------------- local files


def write_file_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, flush it to disk, rename it over
    ``path`` and flush the directory entry: after a crash or a power loss ``path`` holds the old
    or the new content, never a torn or empty file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_orphans(path: Path) -> None:
    """Delete temporary siblings of ``path`` that a crashed writer left behind (older than
    ``ORPHAN_AGE_S``; a live writer's temporary file is seconds old and is left alone)."""
    cutoff = time.time() - ORPHAN_AGE_S
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                log.warning("removed %s, left by a writer that did not finish", tmp)
        except FileNotFoundError:
            pass


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush ``path``'s directory entries (a rename or a new file in it) to disk."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _parquet_bytes(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- the interface


class DataRoot(ABC):
    """A place holding files by key (a relative POSIX path such as ``ohlcv/BTCUSDT.parquet``).
    ``url``: the local directory or ``s3://bucket/prefix``."""

    url: str

    @abstractmethod
    def ref(self, key: str) -> Path | str:
        """Where ``key`` lives: a ``Path`` under a local root, an ``s3://`` URL otherwise."""

    @abstractmethod
    def read_versioned(self, key: str, known: Hashable | None) -> tuple[Hashable, bytes | None]:
        """``(version, content)`` of ``key`` read in one request, content ``None`` when the
        version is ``known`` (unchanged); ``FileNotFoundError`` when it does not exist."""

    @abstractmethod
    def write_bytes_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` by ``data`` all at once (module docstring)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix`` (a string prefix, e.g. ``published/history/
        predictions-``; nested keys included, temporary files never), sorted."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""

    @abstractmethod
    def child(self, prefix: str) -> DataRoot:
        """The root whose keys live under ``prefix`` of this one (``reports/BTCUSDT``)."""

    def location(self, key: str) -> str:
        """``ref(key)`` as text, for messages and metadata."""
        return str(self.ref(key))

    def read_bytes(self, key: str) -> bytes:
        """The content of ``key``; ``FileNotFoundError`` naming it when it does not exist."""
        return self.read_versioned(key, None)[1] or b""

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text_atomic(self, key: str, text: str) -> None:
        self.write_bytes_atomic(key, text.encode("utf-8"))

    def read_parquet(self, key: str, **kwargs: Any) -> pl.DataFrame:
        """``key`` read in one request (a concurrent replace cannot mix two versions);
        ``kwargs`` go to ``pl.read_parquet`` (``columns``, ``schema``...)."""
        return pl.read_parquet(io.BytesIO(self.read_bytes(key)), **kwargs)

    def read_parquet_many(self, keys: Sequence[str], **kwargs: Any) -> list[pl.DataFrame]:
        """``read_parquet`` of each of ``keys``, in order."""
        return [self.read_parquet(k, **kwargs) for k in keys]

    def write_parquet_atomic(self, key: str, df: pl.DataFrame) -> None:
        """``df`` as zstd Parquet with statistics, written with ``write_bytes_atomic``."""
        self.write_bytes_atomic(key, _parquet_bytes(df))


def as_root(where: Path | str | DataRoot) -> DataRoot:
    """``where`` when it is a root already, else the local root on that directory."""
    return where if isinstance(where, DataRoot) else LocalRoot(where)


def read_json(where: Path | str | DataRoot, key: str) -> Any:
    """The JSON document at ``key`` of ``where`` (the home or a data root), parsed; None when
    it does not exist; ``json.JSONDecodeError`` (a ``ValueError``) when it is not JSON."""
    try:
        text = as_root(where).read_text(key)
    except FileNotFoundError:
        return None
    return json.loads(text)


def open_root(data_url: str | None, home: Path | str) -> DataRoot:
    """The data root of ``LEVIBOT_DATA_URL`` (``data_url``): the local ``home`` when empty,
    the bucket prefix for ``s3://bucket/prefix``; ``ValueError`` naming any other value."""
    if not data_url:
        return LocalRoot(home)
    return S3Root(data_url)


class LocalRoot(DataRoot):
    """Files under a local directory, each written with ``write_file_atomic``."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home)
        self.url = str(self.home)

    def __repr__(self) -> str:
        return f"LocalRoot({self.url!r})"

    def ref(self, key: str) -> Path:
        return self.home / key

    def read_versioned(self, key: str, known: Hashable | None) -> tuple[Hashable, bytes | None]:
        # One open file: (inode, mtime_ns, size) and the bytes belong to the same version (an
        # atomic replace always changes the inode).
        with open(self.home / key, "rb") as f:
            st = os.fstat(f.fileno())
            version = (st.st_ino, st.st_mtime_ns, st.st_size)
            return version, (None if version == known else f.read())

    def read_parquet(self, key: str, **kwargs: Any) -> pl.DataFrame:
        with open(self.home / key, "rb") as f:  # read through one open file
            return pl.read_parquet(f, **kwargs)

    def write_bytes_atomic(self, key: str, data: bytes) -> None:
        write_file_atomic(self.home / key, lambda tmp: tmp.write_bytes(data))

    def write_text_atomic(self, key: str, text: str) -> None:
        write_file_atomic(self.home / key, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write_parquet_atomic(self, key: str, df: pl.DataFrame) -> None:
        write_file_atomic(
            self.home / key, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True)
        )

    def exists(self, key: str) -> bool:
        return (self.home / key).exists()

    def list(self, prefix: str) -> list[str]:
        folder, _, start = prefix.rpartition("/")
        base = self.home / folder
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob(f"{start}*"):
            rel = path.relative_to(self.home).as_posix()
            if path.is_file() and not path.name.startswith(".") and rel.startswith(prefix):
                keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> bool:
        path = self.home / key
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def child(self, prefix: str) -> LocalRoot:
        return LocalRoot(self.home / prefix)


# ----------------------------------------------------------------------------- S3


def parse_s3_url(url: str) -> tuple[str, str]:
    """``"s3://bucket/a/b/"`` -> ``("bucket", "a/b")``; ``ValueError`` naming ``url`` unless it
    is ``s3://`` with a valid bucket name and a prefix without empty, ``.`` or ``..`` parts."""
    rest = url[len("s3://") :] if url.startswith("s3://") else None
    bucket, _, prefix = (rest or "").partition("/")
    parts = [p for p in prefix.strip("/").split("/") if p]
    bad_part = any(p in (".", "..") for p in parts) or "//" in prefix.strip("/")
    if rest is None or not _BUCKET.fullmatch(bucket) or bad_part or "@" in bucket:
        raise ValueError(
            f"data URL {url!r}: expected s3://BUCKET or s3://BUCKET/PREFIX (a bucket name of "
            "3-63 lower-case letters, digits, dots and hyphens; no credentials in the URL)"
        )
    return bucket, "/".join(parts)


class S3Root(DataRoot):
    """Objects under ``s3://bucket/prefix`` of an S3-compatible store (AWS, SeaweedFS, MinIO),
    through boto3 with credentials from its default chain (module docstring)."""

    def __init__(self, url: str, client: Any = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._client, self._secrets = client, ()

    def __repr__(self) -> str:
        return f"S3Root({self.url!r})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (a few retries, bounded timeouts)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            config = Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            )
            self._client = session.client("s3", config=config)
            creds = session.get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                self._secrets = tuple(
                    v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v
                )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ref(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _error(self, action: str, key: str, exc: Exception) -> OSError:
        """``exc`` from boto3 as ``FileNotFoundError`` (no such key) or ``ObjectStoreError``
        naming the object, with every credential value masked."""
        from botocore.exceptions import ClientError

        where = self.ref(key)
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", "?"))
            if code in ("NoSuchKey", "404", "NotFound"):
                return FileNotFoundError(2, "no such object", where)
            detail = f"{code}: {err.get('Message', '')}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            detail = detail.replace(secret, "***")
        return ObjectStoreError(f"{action} {where} failed ({detail})")

    def _call(self, action: str, key: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=self._key(key), **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(action, key, exc) from None

    def read_versioned(self, key: str, known: Hashable | None) -> tuple[Hashable, bytes | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": known} if isinstance(known, str) else {}
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
            return got["ETag"], got["Body"].read()
        except ClientError as exc:
            if extra and exc.response.get("Error", {}).get("Code") in ("304", "NotModified"):
                return known, None
            raise self._error("GET", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("GET", key, exc) from None

    def read_parquet_many(self, keys: Sequence[str], **kwargs: Any) -> list[pl.DataFrame]:
        with ThreadPoolExecutor(max_workers=PARALLEL_GETS) as pool:
            blobs = list(pool.map(self.read_bytes, keys))
        return [pl.read_parquet(io.BytesIO(b), **kwargs) for b in blobs]

    def write_bytes_atomic(self, key: str, data: bytes) -> None:
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")
        self._call("PUT", key, "put_object", Body=data, ContentMD5=md5)

    def exists(self, key: str) -> bool:
        try:
            self._call("HEAD", key, "head_object")
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        start = len(self._key(""))
        keys = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                keys += [obj["Key"][start:] for obj in page.get("Contents", [])]
        except (BotoCoreError, ClientError) as exc:
            raise self._error("LIST", prefix + "*", exc) from None
        return sorted(keys)

    def delete(self, key: str) -> bool:
        existed = self.exists(key)
        if existed:
            self._call("DELETE", key, "delete_object")
        return existed

    def child(self, prefix: str) -> S3Root:
        sub = S3Root(f"s3://{self.bucket}/{self._key(prefix.strip('/'))}", self.client)
        sub._secrets = self._secrets
        return sub
