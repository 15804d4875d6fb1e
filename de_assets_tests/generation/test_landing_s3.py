"""The landing folder on S3-compatible storage (a real moto server): fresh listings, ETags, no folders.

The round trips shared with local folders run on S3 too (``test_landing.py``, parameter ``s3``); these
are the object-store specifics. "Another process" (a source system delivering files) is an s3fs client
of its own, sharing nothing with the filesystem instance fsspec keeps for the folder under test.
"""

import hashlib
import time

import pytest

from de_assets.generation.landing import ODD_NAME, LandingFolder
from de_assets_tests.servers.s3 import Bucket


@pytest.fixture
def folder(s3_bucket: Bucket) -> LandingFolder:
    return LandingFolder(s3_bucket.url("landing"))


def test_write_atomic_leaves_only_the_final_object_with_the_content_s_etag(folder, separate_s3, s3_bucket):
    data = b'{"event_id": "e1"}\n'
    path = folder.write_atomic("clickstream_2024-03-02_01.jsonl", data)
    assert path == f"{s3_bucket.name}/landing/clickstream_2024-03-02_01.jsonl"
    assert separate_s3.find(f"{s3_bucket.name}/landing") == [path]
    [landed] = folder.list()
    # A single-part upload's ETag is the MD5 of the content (quoted), whoever computes it.
    assert landed.etag == f'"{hashlib.md5(data).hexdigest()}"'
    assert landed.size == len(data)
    assert abs(landed.modified - time.time()) < 60
    assert folder.read(landed.name) == data


def test_every_listing_sees_what_other_processes_did_since(folder, separate_s3, s3_bucket):
    """s3fs caches listings in the filesystem instance fsspec shares: the folder must not use them."""
    assert folder.list() == []
    folder.write_atomic("a.jsonl", b"1")
    assert [f.name for f in folder.list()] == ["a.jsonl"]
    separate_s3.pipe_file(f"{s3_bucket.name}/landing/b.jsonl", b"22")
    assert [(f.name, f.size) for f in folder.list()] == [("a.jsonl", 1), ("b.jsonl", 2)]
    assert folder.read("b.jsonl") == b"22"
    separate_s3.rm_file(f"{s3_bucket.name}/landing/a.jsonl")
    # A new folder instance in the same process gets fsspec's shared filesystem: it must not be stale either.
    assert [f.name for f in LandingFolder(s3_bucket.url("landing")).list()] == ["b.jsonl"]
    with pytest.raises(FileNotFoundError):
        folder.read("a.jsonl")


def test_a_rewrite_within_the_same_second_changes_only_the_etag(folder, separate_s3, s3_bucket):
    """Object stores keep modification times to the second: size and time alone miss such a rewrite."""
    rewritten = b'{"a": 2}\n'
    folder.list(), separate_s3.ls(s3_bucket.name)  # both clients connected before the clock matters
    for _attempt in range(3):  # a loaded machine may cross a second boundary between the two writes
        time.sleep(1 - time.time() % 1 + 0.01)
        folder.write_atomic("day.jsonl", b'{"a": 1}\n')
        [before] = folder.list()
        separate_s3.pipe_file(
            f"{s3_bucket.name}/landing/day.jsonl", rewritten
        )  # the source rewrites in place
        [after] = folder.list()
        if after.modified == before.modified:
            break
    else:
        pytest.fail("could not make two writes within one second")
    assert after.size == before.size
    assert after.etag != before.etag
    assert after.etag == f'"{hashlib.md5(rewritten).hexdigest()}"'


def test_hidden_objects_and_deeper_keys_are_not_listed_odd_names_are_refused(folder, separate_s3, s3_bucket):
    landing = f"{s3_bucket.name}/landing"
    folder.write_atomic("visible.jsonl", b"1")
    separate_s3.pipe_file(f"{landing}/.visible.jsonl.abc.tmp", b"partial")  # a writer still at work
    separate_s3.pipe_file(f"{landing}/sub/clickstream_2024-03-02_01.jsonl", b"1")  # a "folder": a longer key
    separate_s3.pipe_file(f"{landing}/odd name.jsonl", b"1")  # no filesystem rule stops a source writing this
    listed = folder.list()
    assert [(f.name, f.refused) for f in listed] == [("odd name.jsonl", ODD_NAME), ("visible.jsonl", None)]


def test_a_landing_prefix_without_objects_lists_empty(s3_bucket):
    assert LandingFolder(s3_bucket.url("nothing/landed/yet")).list() == []
