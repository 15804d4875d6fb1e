"""Opening a folder given as a local path or an fsspec URL, the way the cold tier and the landing need it.

On S3-compatible storage (s3fs) the endpoint, the region and the credentials come from the standard
AWS environment variables that botocore reads itself (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), so no
secret ever passes through Dagster config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem


def open_folder(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[AbstractFileSystem, str]:
    """The filesystem and the path (without a trailing ``/``) of the folder ``url``.

    Directory listings are never cached. fsspec shares one filesystem instance per URL type and
    options within a process, and s3fs keeps every listing it made in that instance: a long-lived
    process (the code server evaluating the sensor tick after tick, a worker reading the cold tier)
    would go on seeing a folder as it first listed it, missing new objects and still finding removed
    ones (it even answers ``info`` of a new object with FileNotFoundError from the stale listing).
    A listing is cheap next to a wrong answer. Local folders have no such cache, and keep fsspec's
    plain instance.
    """
    options = dict(storage_options or {})
    if not issubclass(fsspec.get_filesystem_class(fsspec.utils.get_protocol(url)), LocalFileSystem):
        options["use_listings_cache"] = False
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/")


# Object stores: no folders, and "making" the top one makes a bucket (or container).
_OBJECT_STORE_PROTOCOLS = frozenset({"s3", "s3a", "gcs", "gs", "az", "abfs", "abfss", "adl", "oss"})


def ensure_folder(fs: AbstractFileSystem, path: str) -> None:
    """Make ``path`` a folder where folders exist (local disks, SFTP, HDFS...). On an object store
    there is nothing to make, and s3fs's ``makedirs`` would create a missing *bucket*: a misspelt
    bucket name must fail the write (NoSuchBucket), never send the data to a new bucket."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if not protocols & _OBJECT_STORE_PROTOCOLS:
        fs.makedirs(path, exist_ok=True)
