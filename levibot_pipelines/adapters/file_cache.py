"""A file parsed once per version, for readers that poll files another process replaces.

The version is the file's ``(inode, mtime_ns, size)``: a writer that replaces the file atomically
(write to a temporary name, then ``os.replace``) always changes the inode, so a reader never serves
an old parse of a new file, and parses each publish once instead of once per request.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


class FileCache:
    """Parse a file once per version; the version is its (inode, mtime_ns, size).

    ``parse`` turns the text into a value. A file that cannot be read (a directory in its place,
    no permission) or parsed (``parse`` raised anything) is reported as ``error``, the reader's
    own ``ValueError`` subclass naming the file and the cause, so a caller that answers 503 for
    a bad file never answers 500 instead. The version, its value and its error are recorded
    together after the parse: a failed parse is raised again on every ``get`` until the file
    changes, and the previous version is never served for a new file.
    """

    def __init__(
        self, path: Path, parse: Callable[[str], Any], error: type[ValueError] = ValueError
    ) -> None:
        self.path, self.parse, self.error_type = path, parse, error
        self.key: tuple[int, int, int] | None = None
        self.value: Any = None
        self.error: ValueError | None = None

    def get(self) -> Any:
        """The parsed content; ``None`` when the file does not exist; raises ``error``."""
        try:
            f = open(self.path, "rb")  # closed by the with below
        except FileNotFoundError:
            self.key, self.value, self.error = None, None, None
            return None
        except OSError as exc:
            self.key, self.value, self.error = None, None, None  # not a version: retry next time
            raise self._unreadable(exc) from None
        with f:
            st = os.fstat(f.fileno())
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self.key:
                value, error = None, None
                try:
                    value = self.parse(f.read().decode("utf-8", errors="replace"))
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
