"""The landing folder refuses links, special files and odd names, and so does ingestion."""

import datetime as dt
import os
import re
import threading
import uuid

import dagster as dg
import pytest

from de_assets.generation.landing import (
    NOT_A_FILE,
    ODD_NAME,
    SYMLINK,
    LandedFile,
    LandingFolder,
    RefusedFileError,
)
from de_assets.generation.resources import LandingFolderResource
from de_assets.ingestion.assets import _landed_files
from de_assets.security.identifiers import UnsafeNameError

DAY = dt.date(2024, 3, 2)
PLAIN = f"clickstream_{DAY}_01.jsonl"
LINKED = f"clickstream_{DAY}_02.jsonl"
SECRET = b'{"password": "hunter2"}\n'


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / PLAIN).write_bytes(b'{"event_id": "a"}\n')
    return folder


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.jsonl"
    path.write_bytes(SECRET)
    return path


def refusals(folder: LandingFolder) -> dict[str, str | None]:
    return {f.name: f.refused for f in folder.list()}


def test_a_link_to_a_file_outside_is_listed_as_refused_and_never_read(root, secret):
    os.symlink(secret, root / LINKED)
    folder = LandingFolder(str(root))
    assert refusals(folder) == {PLAIN: None, LINKED: SYMLINK}
    with pytest.raises(RefusedFileError, match="symbolic link"):
        folder.read(LINKED)
    assert folder.read(PLAIN) == b'{"event_id": "a"}\n'


def test_links_inside_the_folder_dangling_links_and_links_to_folders_are_refused_too(root, tmp_path):
    os.symlink(root / PLAIN, root / LINKED)
    os.symlink(tmp_path / "nowhere", root / "clickstream_2024-03-02_03.jsonl")
    os.symlink(tmp_path, root / "clickstream_2024-03-02_04.jsonl")
    folder = LandingFolder(str(root))
    assert refusals(folder) == {
        PLAIN: None,
        LINKED: SYMLINK,
        "clickstream_2024-03-02_03.jsonl": SYMLINK,
        "clickstream_2024-03-02_04.jsonl": SYMLINK,
    }
    for name in (LINKED, "clickstream_2024-03-02_03.jsonl", "clickstream_2024-03-02_04.jsonl"):
        with pytest.raises(RefusedFileError):
            folder.read(name)


def test_a_fifo_is_refused_and_reading_it_does_not_block(root):
    os.mkfifo(root / LINKED)
    folder = LandingFolder(str(root))
    assert refusals(folder)[LINKED] == NOT_A_FILE
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(folder.read(LINKED))
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)  # a blocked reader must not hang the suite
    reader.start()
    reader.join(timeout=5)
    assert outcome, "reading a FIFO blocked"
    assert isinstance(outcome[0], RefusedFileError)


def test_a_file_swapped_for_a_link_after_listing_is_refused_at_read(root, secret):
    folder = LandingFolder(str(root))
    assert refusals(folder) == {PLAIN: None}
    os.replace(root / PLAIN, root / "moved.jsonl")
    os.symlink(secret, root / PLAIN)
    with pytest.raises(RefusedFileError, match="symbolic link"):
        folder.read(PLAIN)


def test_odd_names_are_listed_as_refused(root):
    (root / "clickstream_2024-03-02_0 1.jsonl").write_bytes(b"{}\n")
    (root / "clickstream_2024-03-02_\u00e9.jsonl").write_bytes(b"{}\n")
    assert refusals(LandingFolder(str(root))) == {
        PLAIN: None,
        "clickstream_2024-03-02_0 1.jsonl": ODD_NAME,
        "clickstream_2024-03-02_\u00e9.jsonl": ODD_NAME,
    }


def test_a_landing_root_that_is_itself_a_link_works_normally(root, tmp_path):
    alias = tmp_path / "alias"
    os.symlink(root, alias)
    folder = LandingFolder(str(alias))
    assert refusals(folder) == {PLAIN: None}
    assert folder.read(PLAIN) == b'{"event_id": "a"}\n'


def test_plain_folders_and_hidden_files_stay_unlisted(root):
    (root / "sub").mkdir()
    (root / f".{PLAIN}.abc.tmp").write_bytes(b"{")
    assert refusals(LandingFolder(str(root))) == {PLAIN: None}


def test_object_store_folders_have_no_refusals():
    folder = LandingFolder(f"memory://landing-{uuid.uuid4().hex}")
    folder.write_atomic(PLAIN, b"{}\n")
    assert folder.list() == [LandedFile(PLAIN, 3, folder.list()[0].modified)]
    assert folder.read(PLAIN) == b"{}\n"


def test_refused_errors_are_unsafe_name_errors():
    # Callers that already guard reads against unsafe names are guarded against links as well.
    assert issubclass(RefusedFileError, UnsafeNameError)


def test_ingestion_reads_only_the_plain_files_and_logs_the_rest(root, secret, capfd):
    os.symlink(secret, root / LINKED)
    os.mkfifo(root / "clickstream_2024-03-02_03.jsonl")
    (root / "clickstream_2024-03-02_0 4.jsonl").write_bytes(b"{}\n")
    (root / "clickstream_2024-03-03_01.jsonl").write_bytes(b"{}\n")  # another day
    context = dg.build_asset_context()
    files = dict(_landed_files(context, LandingFolderResource(root=str(root)), DAY))
    assert files == {PLAIN: b'{"event_id": "a"}\n'}
    log = capfd.readouterr().err
    assert re.search(rf"WARNING.*skipping landed file '{LINKED}': a symbolic link", log)
    assert re.search(r"WARNING.*skipping landed file 'clickstream_2024-03-02_03.jsonl': not a regular", log)
    assert re.search(r"WARNING.*skipping landed file 'clickstream_2024-03-02_0 4.jsonl': not a plain", log)
    assert "hunter2" not in log
