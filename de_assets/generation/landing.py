"""The landing folder: where source systems drop files for ingestion, over any fsspec filesystem.

A local path by default; any fsspec URL (``s3://bucket/landing``, ``memory://landing``) works the same
way. Writers never expose partial files: data goes to a hidden temporary name (starting with ``.``) in
the same folder and is then moved to its final name, and :meth:`LandingFolder.list` never shows hidden
names. File names are plain names (no folders), checked before they reach the filesystem.

Whatever lands is listed (so that nothing goes unseen), but an entry that must not be read carries the
reason in :attr:`LandedFile.refused`: a name that is not plain, a symbolic link (never followed: it
could point anywhere, e.g. at a secret outside the folder), anything that is not a regular file (a
FIFO would block a reader forever), or a path that resolves outside the folder. :meth:`LandingFolder.read`
refuses the same entries again when it opens them, because a file can be swapped for a link between
the listing and the read.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import stat
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from de_assets.security.identifiers import UnsafeNameError, safe_file_name
from de_assets.storage.filesystem import ensure_folder, open_folder

_PREFIX = re.compile(r"^[A-Za-z0-9._-]{0,255}$")
# Reasons in LandedFile.refused: short and without the name, so that callers can group them in logs.
ODD_NAME = "not a plain file name (letters, digits and . _ - only)"
SYMLINK = "a symbolic link (never followed)"
NOT_A_FILE = "not a regular file"
OUTSIDE = "resolves outside the landing folder"
# Opening must neither follow a link in the last component nor block on a FIFO (both 0 on Windows).
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class RefusedFileError(UnsafeNameError):
    """A landed entry that must not be read: a symbolic link, not a regular file, or outside the folder."""


@dataclass(frozen=True)
class LandedFile:
    name: str
    size: int  # bytes (of a link's target, as the filesystem reports it; the target is never read)
    modified: float  # seconds since the epoch
    refused: str | None = None  # why the file must not be read; None for a plain file in the folder
    # The content's identity as the store reports it (an object store's ETag), None where there is
    # none (local folders). Object stores keep times to the second: a rewrite of the same size within
    # that second changes only this.
    etag: str | None = None


class LandingFolder:
    """A flat folder of landed files: atomic writes, listing, reading and removal by plain name."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root
        self._fs, self._path = open_folder(root, storage_options)
        # Only a local folder has links and special files; object stores and memory hold plain objects.
        self._local = isinstance(self._fs, LocalFileSystem)

    def _full(self, name: str) -> str:
        return f"{self._path}/{safe_file_name(name, 'landing file name')}"

    def write_atomic(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` so that readers see either no file or all of it; returns its path."""
        final = self._full(name)
        temporary = f"{self._path}/.{name}.{uuid.uuid4().hex}.tmp"
        ensure_folder(self._fs, self._path)
        try:
            self._fs.pipe_file(temporary, data)
            self._fs.mv(temporary, final)
        except BaseException:
            if self._fs.exists(temporary):
                self._fs.rm_file(temporary)
            raise
        return final

    def list(self, prefix: str = "") -> list[LandedFile]:
        """The landed (final, non-hidden) entries whose names start with ``prefix``, sorted by name.

        Folders are left out; links and special files are listed with :attr:`LandedFile.refused` set.
        """
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise UnsafeNameError(
                f"refusing landing file prefix {prefix!r}: expected letters, digits and . _ -"
            )
        try:
            entries = self._fs.ls(self._path, detail=True)
        except FileNotFoundError:
            return []
        real_root = os.path.realpath(self._path) if self._local else None
        files = []
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            # Names starting with "." are files still being written (or hidden); every other entry is
            # listed, odd names and links included, so that nothing that landed goes unseen.
            if not name.startswith(prefix) or name.startswith("."):
                continue
            if entry["type"] == "directory" and not entry.get("islink"):
                continue
            files.append(
                LandedFile(
                    name=name,
                    size=int(entry["size"]),
                    modified=self._modified(entry),
                    refused=self._refusal(name, entry, real_root),
                    etag=entry.get("ETag"),
                )
            )
        return sorted(files, key=lambda f: f.name)

    @staticmethod
    def _refusal(name: str, entry: Mapping[str, Any], real_root: str | None) -> str | None:
        try:
            safe_file_name(name)
        except UnsafeNameError:
            return ODD_NAME
        # fsspec's local listing reports links with islink (and type "other", as it does not follow).
        if entry.get("islink"):
            return SYMLINK
        if entry["type"] != "file":
            return NOT_A_FILE
        if real_root is not None and os.path.dirname(os.path.realpath(entry["name"])) != real_root:
            return OUTSIDE
        return None

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
        """The content of the plain landed file ``name``; raises :class:`RefusedFileError` for a link,
        a special file or a path outside the folder (nothing of those is read)."""
        path = self._full(name)
        if not self._local:
            return self._fs.cat_file(path)
        if os.path.islink(path):
            raise RefusedFileError(f"refusing landed file {name!r}: {SYMLINK}")
        if os.path.dirname(os.path.realpath(path)) != os.path.realpath(self._path):
            raise RefusedFileError(f"refusing landed file {name!r}: {OUTSIDE}")
        # The checks above leave a window in which the file could be swapped for a link or a FIFO;
        # O_NOFOLLOW and the fstat of what was actually opened close it.
        try:
            descriptor = os.open(path, _OPEN_FLAGS)
        except OSError as error:
            if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link
                raise RefusedFileError(f"refusing landed file {name!r}: {SYMLINK}") from None
            raise
        with os.fdopen(descriptor, "rb") as opened:
            if not stat.S_ISREG(os.fstat(opened.fileno()).st_mode):
                raise RefusedFileError(f"refusing landed file {name!r}: {NOT_A_FILE}")
            return opened.read()

    def remove(self, name: str) -> None:
        self._fs.rm_file(self._full(name))
