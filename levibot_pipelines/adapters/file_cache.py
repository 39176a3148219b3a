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

    ``parse`` turns the text into a value and raises a ``ValueError`` (subclass) for bad
    content; that error is kept with the version and raised again on every ``get`` until the
    file changes, so a corrupt file is reported, never parsed once per request.
    """

    def __init__(self, path: Path, parse: Callable[[str], Any]) -> None:
        self.path, self.parse = path, parse
        self.key: tuple[int, int, int] | None = None
        self.value: Any = None
        self.error: Exception | None = None

    def get(self) -> Any:
        """The parsed content; ``None`` when the file does not exist; re-raises parse errors."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.key, self.value, self.error = None, None, None
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if key != self.key:
                text = f.read().decode("utf-8", errors="replace")
                self.key = key
                try:
                    self.value, self.error = self.parse(text), None
                except ValueError as exc:
                    self.value, self.error = None, exc
        if self.error is not None:
            raise self.error
        return self.value
