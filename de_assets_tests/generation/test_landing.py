import os
import time
import uuid

import pytest

from de_assets.generation.landing import LandedFile, LandingFolder


@pytest.fixture(params=["local", "memory", "s3"])
def folder(request, tmp_path) -> LandingFolder:
    if request.param == "local":
        return LandingFolder(str(tmp_path / "landing"))
    if request.param == "s3":  # a real S3-compatible server (de_assets_tests.servers.s3)
        return LandingFolder(request.getfixturevalue("s3_bucket").url("landing"))
    return LandingFolder(f"memory://landing-{uuid.uuid4().hex}")


def test_write_list_read_remove_round_trip(folder):
    before = time.time()
    path = folder.write_atomic("b.jsonl", b'{"x":1}\n')
    folder.write_atomic("a.jsonl", b"")
    assert path.endswith("/b.jsonl")
    listed = folder.list()
    assert [f.name for f in listed] == ["a.jsonl", "b.jsonl"]
    assert listed[1] == LandedFile("b.jsonl", 8, listed[1].modified, etag=listed[1].etag)
    assert isinstance(listed[1].modified, float)
    assert before - 5 <= listed[1].modified <= time.time() + 5
    assert folder.read("b.jsonl") == b'{"x":1}\n'
    folder.remove("a.jsonl")
    assert [f.name for f in folder.list()] == ["b.jsonl"]


def test_overwrite_replaces_the_file(folder):
    folder.write_atomic("day_01.jsonl", b"old content")
    folder.write_atomic("day_01.jsonl", b"new")
    assert [(f.name, f.size) for f in folder.list()] == [("day_01.jsonl", 3)]
    assert folder.read("day_01.jsonl") == b"new"


def test_list_filters_by_prefix(folder):
    for name in ("clickstream_2024-01-01_01.jsonl", "clickstream_2024-01-02_01.jsonl", "other.txt"):
        folder.write_atomic(name, b"x")
    assert [f.name for f in folder.list("clickstream_2024-01-02_")] == ["clickstream_2024-01-02_01.jsonl"]
    assert len(folder.list()) == 3


def test_list_of_a_missing_folder_is_empty(tmp_path):
    assert LandingFolder(str(tmp_path / "never-created")).list() == []


def test_hidden_and_temporary_files_are_not_listed(tmp_path):
    root = tmp_path / "landing"
    folder = LandingFolder(str(root))
    folder.write_atomic("visible.jsonl", b"1")
    (root / ".visible.jsonl.abc.tmp").write_bytes(b"partial")
    (root / "sub").mkdir()
    assert [f.name for f in folder.list()] == ["visible.jsonl"]


def test_no_temporary_file_is_left_behind(tmp_path):
    root = tmp_path / "landing"
    folder = LandingFolder(str(root))
    folder.write_atomic("a.jsonl", b"data")
    assert os.listdir(root) == ["a.jsonl"]


def test_failed_write_removes_its_temporary_file(tmp_path):
    root = tmp_path / "landing"
    folder = LandingFolder(str(root))
    with pytest.raises(TypeError):
        folder.write_atomic("a.jsonl", "text, not bytes")  # type: ignore[arg-type]
    assert os.listdir(root) == []


@pytest.mark.parametrize(
    "name",
    ["../x", "a/b", ".hidden", "", "..", "a/../b", "a\\b", "x..y", "a b", "/abs", "é.jsonl", "a" * 256],
)
def test_unsafe_names_are_refused(tmp_path, name):
    folder = LandingFolder(str(tmp_path / "landing"))
    with pytest.raises(ValueError, match="refusing landing file name"):
        folder.write_atomic(name, b"x")
    with pytest.raises(ValueError, match="refusing landing file name"):
        folder.read(name)
    with pytest.raises(ValueError, match="refusing landing file name"):
        folder.remove(name)
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "landing").exists() or os.listdir(tmp_path / "landing") == []


@pytest.mark.parametrize("prefix", ["../", "a/b", "a b"])
def test_unsafe_prefixes_are_refused(tmp_path, prefix):
    with pytest.raises(ValueError, match="refusing landing file prefix"):
        LandingFolder(str(tmp_path)).list(prefix)


def test_plain_names_are_accepted(tmp_path):
    folder = LandingFolder(str(tmp_path / "landing"))
    for name in ("clickstream_2024-01-03_01.jsonl", "A-b_c.1", "_x", "-"):
        folder.write_atomic(name, b"x")
    assert len(folder.list()) == 4


def test_files_with_odd_names_are_listed_not_hidden(tmp_path):
    from de_assets.generation.landing import LandingFolder
    from de_assets.security.identifiers import UnsafeNameError

    (tmp_path / "batch one.jsonl").write_text("{}\n")
    (tmp_path / ".in-flight.tmp").write_text("{")
    folder = LandingFolder(str(tmp_path))
    assert [f.name for f in folder.list()] == ["batch one.jsonl"]
    with pytest.raises(UnsafeNameError, match="refusing landing file name"):
        folder.read("batch one.jsonl")
