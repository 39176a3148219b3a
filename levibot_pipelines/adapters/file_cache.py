"""A file parsed once per version, for readers that poll files another process replaces.

The file is a local path or a key in a data root (``adapters.object_store``). The version is the
local file's ``(inode, mtime_ns, size)`` or the object's ETag, read in the same request as its
bytes: a writer that replaces the file atomically (write to a temporary name, then
``os.replace``; one whole PUT) always changes it, so a reader never serves an old parse of a new
file, and parses each publish once instead of once per request. An object is fetched with
``If-None-Match``: an unchanged one costs a request, not a download.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from levibot_pipelines.adapters.object_store import DataRoot, LocalRoot


class FileCache:
    """Parse a file once per version (its (inode, mtime_ns, size), or an object's ETag).

    ``path``: a local file, or ``(root, key)`` for a key in a data root. ``parse`` turns the
    text into a value. A file that cannot be read (a directory in its place, no permission, an
    unreachable object store) or parsed (``parse`` raised anything) is reported as ``error``,
    the reader's own ``ValueError`` subclass naming the file and the cause, so a caller that
    answers 503 for a bad file never answers 500 instead. The version, its value and its error
    are recorded together after the parse: a failed parse is raised again on every ``get``
    until the file changes, and the previous version is never served for a new file.
    """

    def __init__(
        self,
        path: Path | tuple[DataRoot, str],
        parse: Callable[[str], Any],
        error: type[ValueError] = ValueError,
    ) -> None:
        if isinstance(path, tuple):
            self.root, self.name = path
        else:
            self.root, self.name = LocalRoot(Path(path).parent), Path(path).name
        self.path = self.root.location(self.name)
        self.parse, self.error_type = parse, error
        self.key: Hashable | None = None
        self.value: Any = None
        self.error: ValueError | None = None

    def get(self) -> Any:
        """The parsed content; ``None`` when the file does not exist; raises ``error``."""
        try:
            key, data = self.root.read_versioned(self.name, self.key)
        except FileNotFoundError:
            self.key, self.value, self.error = None, None, None
            return None
        except OSError as exc:
            self.key, self.value, self.error = None, None, None  # not a version: retry next time
            raise self._unreadable(exc) from None
        if data is not None:  # a new version
            value, error = None, None
            try:
                value = self.parse(data.decode("utf-8", errors="replace"))
            except self.error_type as exc:
                error = exc
            except Exception as exc:  # anything else the content made the parser raise
                error = self._unreadable(exc)
            self.key, self.value, self.error = key, value, error
        if self.error is not None:
            raise self.error
        return self.value

    def _unreadable(self, exc: Exception) -> ValueError:
        return self.error_type(f"{self.path} is unreadable: {type(exc).__name__}: {exc}")
