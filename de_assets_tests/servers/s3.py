"""An S3-compatible server for the tests: moto in server mode on 127.0.0.1, one bucket per test.

The code under test finds the server as production finds its object store: through the standard AWS
variables botocore reads (``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``, the access key pair), so
nothing passes endpoint or credentials in code or Dagster config.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The variables botocore reads, and what the tests set them to. The shared config and credential files
# point at nothing and the instance metadata service is off, so nothing of this machine leaks in and
# no request leaves 127.0.0.1.
_ACCESS_KEY, _SECRET_KEY, _REGION = "test-access-key", "test-secret-key", "us-east-1"
_CLEARED = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True)
class Bucket:
    """A fresh, empty bucket on the test server."""

    name: str
    endpoint: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"


def aws_environment(endpoint: str, scratch: Path) -> dict[str, str]:
    """The AWS variables of a process that uses the test server (``scratch``: an empty folder)."""
    nowhere = scratch / "absent"
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_DEFAULT_REGION": _REGION,
        "AWS_ACCESS_KEY_ID": _ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": _SECRET_KEY,
        "AWS_CONFIG_FILE": str(nowhere),
        "AWS_SHARED_CREDENTIALS_FILE": str(nowhere),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def create_bucket(endpoint: str) -> Bucket:
    """A new bucket on the test server, made with explicit credentials (no environment needed)."""
    import s3fs

    admin = s3fs.S3FileSystem(
        skip_instance_cache=True, endpoint_url=endpoint, key=_ACCESS_KEY, secret=_SECRET_KEY
    )
    bucket = Bucket(f"test-{uuid.uuid4().hex[:20]}", endpoint)
    admin.mkdir(bucket.name)
    return bucket


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The URL of a moto server on 127.0.0.1 (a free port), for the whole test session."""
    server_module = pytest.importorskip(
        "moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')"
    )
    pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -e '.[production]')")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory) -> Iterator[Bucket]:
    """A new bucket, with the AWS variables set for this test; the bucket is deleted afterwards."""
    import s3fs

    for variable in _CLEARED:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in aws_environment(s3_endpoint, tmp_path_factory.mktemp("aws")).items():
        monkeypatch.setenv(variable, value)
    # fsspec keeps one S3FileSystem per set of options, built with the environment of its first use.
    s3fs.S3FileSystem.clear_instance_cache()
    admin = s3fs.S3FileSystem(skip_instance_cache=True)
    bucket = Bucket(f"test-{uuid.uuid4().hex[:20]}", s3_endpoint)
    admin.mkdir(bucket.name)
    try:
        yield bucket
    finally:
        admin.rm(bucket.name, recursive=True)
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def separate_s3(s3_bucket: Bucket):
    """An s3fs client sharing nothing with the filesystem instances fsspec caches for the code under
    test: what another process (a source system, another worker) sees and does."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)
