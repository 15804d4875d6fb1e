"""The landing folder: where source systems drop files for ingestion, over any fsspec filesystem.

A local path by default; any fsspec URL (``s3://bucket/landing``, ``memory://landing``) works the same
way. Writers never expose partial files: data goes to a hidden temporary name (starting with ``.``) in
the same folder and is then moved to its final name, and :meth:`LandingFolder.list` never shows hidden
names. File names are plain names (no folders), checked before they reach the filesystem.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from de_assets.security.identifiers import UnsafeNameError, safe_file_name

_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,255}$")


@dataclass(frozen=True)
class LandedFile:
    name: str
    size: int  # bytes
    modified: float  # seconds since the epoch


class LandingFolder:
    """A flat folder of landed files: atomic writes, listing, reading and removal by plain name."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self._fs, self._path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self._path = self._path.rstrip("/")

    def _full(self, name: str) -> str:
        return f"{self._path}/{safe_file_name(name, 'landing file name')}"

    def write_atomic(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` so that readers see either no file or all of it; returns its path."""
        final = self._full(name)
        temporary = f"{self._path}/.{name}.{uuid.uuid4().hex}.tmp"
        self._fs.makedirs(self._path, exist_ok=True)
        try:
            self._fs.pipe_file(temporary, data)
            self._fs.mv(temporary, final)
        except BaseException:
            if self._fs.exists(temporary):
                self._fs.rm_file(temporary)
            raise
        return final

    def list(self, prefix: str = "") -> list[LandedFile]:
        """The landed (final, non-hidden) files whose names start with ``prefix``, sorted by name."""
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise UnsafeNameError(
                f"refusing landing file prefix {prefix!r}: expected letters, digits and . _ -"
            )
        try:
            entries = self._fs.ls(self._path, detail=True)
        except FileNotFoundError:
            return []
        files = []
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            # Names starting with "." are files still being written (or hidden); every other file is
            # listed, odd names included, so that nothing that landed goes unseen.
            if entry["type"] != "file" or not name.startswith(prefix) or name.startswith("."):
                continue
            files.append(LandedFile(name=name, size=int(entry["size"]), modified=self._modified(entry)))
        return sorted(files, key=lambda f: f.name)

    def _modified(self, entry: Mapping[str, Any]) -> float:
        # Each filesystem reports the modification time in its own key: local "mtime" (seconds),
        # object stores "LastModified" (datetime); anything else goes through fsspec's generic call.
        if "mtime" in entry:
            return float(entry["mtime"])
        stamp = entry.get("LastModified")
        if not isinstance(stamp, dt.datetime):
            stamp = self._fs.modified(entry["name"])
        return stamp.timestamp()

    def read(self, name: str) -> bytes:
        return self._fs.cat_file(self._full(name))

    def remove(self, name: str) -> None:
        self._fs.rm_file(self._full(name))
