"""The landing sensor over a landing folder on S3-compatible storage (a real moto server).

The source system delivers through an s3fs client of its own, as another process would; the sensor
ticks in this process through the resource, whose filesystem instance fsspec shares across ticks.
"""

import dataclasses
import time
from collections.abc import Iterator

import pytest

from de_assets.generation.landing import LandedFile
from de_assets.ingestion.assets import RAW_EVENTS, RAW_EVENTS_REJECTED
from de_assets.orchestration.landing_sensor import files_digest
from de_assets.storage.cold import ColdStore
from de_assets.storage.tier import TableRef
from de_assets_tests.orchestration.test_landing_sensor import KEY, Landing, name, requested
from de_assets_tests.servers.s3 import Bucket


class Source:
    """The delivering system: writes straight into the bucket with a client of its own."""

    def __init__(self, bucket: Bucket, fs) -> None:
        self.fs = fs
        self.folder = f"{bucket.name}/landing"

    def deliver(self, day: str, part: int, data: bytes = b'{"event_id": "e"}\n') -> None:
        self.fs.pipe_file(f"{self.folder}/{name(day, part)}", data)

    def withdraw(self, day: str, part: int) -> None:
        self.fs.rm_file(f"{self.folder}/{name(day, part)}")


@pytest.fixture
def landing(tmp_path, s3_bucket: Bucket) -> Iterator[Landing]:
    landing = Landing(tmp_path, url=s3_bucket.url("landing"), cold_url=s3_bucket.url("cold"))
    yield landing
    # A run on it made the instance's temporary folder (Dagster's default IO manager asks for it):
    # removed now, not by a garbage collection that warns in whichever test it happens to fall.
    landing.instance.dispose()


@pytest.fixture
def source(s3_bucket: Bucket, separate_s3) -> Source:
    return Source(s3_bucket, separate_s3)


def sequence(run_key: str) -> str:
    return KEY.fullmatch(run_key).group(2)


def test_ticks_see_every_delivery_whatever_the_listing_order(landing, source):
    # Delivered in an order that is neither the keys' (the listing's) nor the days'.
    source.deliver("2024-03-05", 2)
    source.deliver("2024-03-02", 1)
    source.deliver("2024-03-05", 1)
    first = requested(landing.tick())
    assert sorted(first) == ["2024-03-02", "2024-03-05"]
    assert landing.tick().run_requests == []

    # Between ticks: a late file for an older day, a new day older than every day seen so far.
    source.deliver("2024-03-02", 2)
    source.deliver("2024-03-01", 1)
    second = requested(landing.tick())
    assert sorted(second) == ["2024-03-01", "2024-03-02"]
    assert (sequence(second["2024-03-01"]), sequence(second["2024-03-02"])) == ("1", "2")

    source.withdraw("2024-03-05", 2)
    third = requested(landing.tick())
    assert list(third) == ["2024-03-05"]
    assert third["2024-03-05"] != first["2024-03-05"]
    assert landing.tick().run_requests == []


def test_a_rewrite_in_place_within_the_same_second_is_requested_again(landing, source):
    """Same name, same size, same (whole-second) time: only the ETag tells the content changed."""
    landing.tick()  # the sensor's client connected before the clock matters
    for _attempt in range(3):  # a loaded machine may cross a second boundary between the two writes
        time.sleep(1 - time.time() % 1 + 0.01)
        source.deliver("2024-03-02", 1, b'{"event_id": "a"}\n')
        before_files = landing.folder.list()
        before = requested(landing.tick())
        source.deliver("2024-03-02", 1, b'{"event_id": "b"}\n')
        after_files = landing.folder.list()
        if [f.modified for f in after_files] == [f.modified for f in before_files]:
            break
    else:
        pytest.fail("could not make two writes within one second")
    assert [f.size for f in after_files] == [f.size for f in before_files]

    def without_etags(files: list[LandedFile]) -> str:
        return files_digest(dataclasses.replace(f, etag=None) for f in files)

    assert without_etags(after_files) == without_etags(before_files)  # size and time cannot tell
    after = requested(landing.tick())
    assert list(after) == ["2024-03-02"]
    assert after["2024-03-02"] != before["2024-03-02"]


def test_a_requested_run_ingests_the_day_from_the_bucket_into_the_bucket(landing, source, s3_bucket):
    lines = [b'{"event_id": "e%d"}\n' % i for i in range(5)]
    source.deliver("2024-03-03", 1, b"".join(lines[:2]))
    source.deliver("2024-03-03", 2, b"".join(lines[2:]) + b"not json\n")
    [request] = landing.tick().run_requests
    job = landing.definitions.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=landing.instance,
        asset_selection=[RAW_EVENTS, RAW_EVENTS_REJECTED],
        partition_key=request.partition_key,
        tags=request.tags,
    )
    assert result.success
    cold = ColdStore(s3_bucket.url("cold"), {"skip_instance_cache": True})
    raw = cold.read(TableRef.for_asset_key(RAW_EVENTS, "day"), ["2024-03-03"])
    assert sorted(zip(raw["source_file"], raw["line_number"], strict=True)) == [
        (name("2024-03-03", 1), 1),
        (name("2024-03-03", 1), 2),
        (name("2024-03-03", 2), 1),
        (name("2024-03-03", 2), 2),
        (name("2024-03-03", 2), 3),
        (name("2024-03-03", 2), 4),
    ]
    rejected = cold.read(TableRef.for_asset_key(RAW_EVENTS_REJECTED, "day"), ["2024-03-03"])
    assert len(rejected) == 1
