"""The landing sensor on real landing folders: one request per changed delivery day, never a lost file."""

import dataclasses
import datetime as dt
import json
import os
import re

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from de_assets.generation.landing import LandedFile, LandingFolder
from de_assets.generation.resources import LandingFolderResource, ShopDatabaseResource
from de_assets.ingestion.assets import RAW_EVENTS, build_ingestion_assets
from de_assets.orchestration.landing_sensor import (
    LANDING_SENSOR,
    NO_DELIVERY_DAY,
    build_landing_sensor,
    files_digest,
    plan_landing,
    run_key,
)
from de_assets.orchestration.partitions import daily_partitions
from de_assets.orchestration.run_tags import RAW_PARTITION_LOCK, raw_partition_lock
from de_assets.security.resources import PiiKeyResource
from de_assets.storage.cold import ColdTierIOManager

FIRST = dt.date(2024, 3, 1)
# Six in the morning on 2024-03-10: the last complete partition is 2024-03-09.
NOW = dt.datetime(2024, 3, 10, 6, tzinfo=dt.UTC)
PARTITIONS = daily_partitions(FIRST)
SENSOR = build_landing_sensor(PARTITIONS, minimum_interval_seconds=30)
ASSETS = build_ingestion_assets(PARTITIONS, order_lookback_days=2, customer_lookback_days=2)
KEY = re.compile(r"^(\d{4}-\d{2}-\d{2}):(\d+):([0-9a-f]{16})$")


def name(day: str, part: int) -> str:
    return f"clickstream_{day}_{part:02d}.jsonl"


class Landing:
    """A real landing folder and the sensor's ticks over it, cursor carried from tick to tick."""

    def __init__(self, tmp_path, url: str | None = None, cold_url: str | None = None):
        """A local landing folder under ``tmp_path``, or the one at ``url`` (e.g. ``s3://...``)."""
        self.root = tmp_path / "landing"
        self.root.mkdir()
        url = url or str(self.root)
        self.folder = LandingFolder(url)
        self.resource = LandingFolderResource(root=url)
        self.definitions = dg.Definitions(
            assets=ASSETS,
            sensors=[SENSOR],
            resources={
                "landing": self.resource,
                "shop": ShopDatabaseResource(url=f"sqlite:///{tmp_path / 'shop.sqlite'}"),
                "cold": ColdTierIOManager(root=cold_url or str(tmp_path / "cold")),
                # Ingestion consults the suppression list (right to be forgotten) with this key.
                "pii_key": PiiKeyResource(key_file=str(tmp_path / "secrets" / "pii.key")),
            },
        )
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor: str | None = None

    def land(self, day: str, part: int, data: bytes = b'{"event_id": "e"}\n') -> None:
        self.folder.write_atomic(name(day, part), data)

    def tick(self, *, now: dt.datetime = NOW, cursor: str | None = None, keep: bool = True):
        """One evaluation through ``evaluate_tick``, which checks the partition keys like the daemon."""
        with (
            dg.partition_loading_context(effective_dt=now),
            dg.build_sensor_context(
                instance=self.instance,
                cursor=self.cursor if cursor is None else cursor,
                resources={"landing": self.resource},
                definitions=self.definitions,
            ) as context,
        ):
            data = SENSOR.evaluate_tick(context)
        if keep:
            self.cursor = data.cursor
        return data


def requested(data) -> dict[str, str]:
    """Partition key -> run key of a tick's requests (one per partition, checked here)."""
    keys = [r.partition_key for r in data.run_requests]
    assert len(keys) == len(set(keys)), "one request per partition and tick"
    return {r.partition_key: r.run_key for r in data.run_requests}


@pytest.fixture
def landing(tmp_path) -> Landing:
    return Landing(tmp_path)


def test_the_sensor_is_defined_as_the_issue_asks():
    assert SENSOR.name == LANDING_SENSOR == "landing_sensor"
    assert SENSOR.default_status == dg.DefaultSensorStatus.RUNNING
    assert SENSOR.minimum_interval_seconds == 30
    assert build_landing_sensor(PARTITIONS, minimum_interval_seconds=7).minimum_interval_seconds == 7
    with pytest.raises(ValueError, match="daily"):
        build_landing_sensor(dg.StaticPartitionsDefinition(["a"]), minimum_interval_seconds=30)


def test_first_tick_requests_every_day_with_files_then_skips(landing):
    landing.land("2024-03-02", 1)
    landing.land("2024-03-02", 2)
    landing.land("2024-03-05", 1)
    first = landing.tick()
    keys = requested(first)
    assert sorted(keys) == ["2024-03-02", "2024-03-05"]
    for partition, key in keys.items():
        day, sequence, _ = KEY.fullmatch(key).groups()
        assert (day, sequence) == (partition, "1")
    for request in first.run_requests:
        assert request.tags[RAW_PARTITION_LOCK] == f"ingestion/raw_events@{request.partition_key}"
        assert raw_partition_lock(RAW_EVENTS, request.partition_key).items() <= request.tags.items()
        assert request.tags["dagster/partition"] == request.partition_key
    cursor = json.loads(first.cursor)
    assert cursor["v"] == 1
    assert set(cursor["days"]) == {"2024-03-02", "2024-03-05"}

    second = landing.tick()
    assert second.run_requests == []
    assert "no new or changed" in second.skip_message
    assert second.cursor == first.cursor


def test_calling_the_sensor_directly_gives_the_same_requests(landing):
    landing.land("2024-03-03", 1)
    with (
        dg.partition_loading_context(effective_dt=NOW),
        dg.build_sensor_context(
            instance=landing.instance, cursor=None, resources={"landing": landing.resource}
        ) as context,
    ):
        result = SENSOR(context)
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == list(
        requested(landing.tick()).items()
    )


def test_a_new_file_for_an_old_day_gives_one_request_with_a_new_key(landing):
    landing.land("2024-03-02", 1)
    landing.land("2024-03-04", 1)
    before = requested(landing.tick())
    landing.land("2024-03-02", 2)
    after = requested(landing.tick())
    assert list(after) == ["2024-03-02"]
    assert after["2024-03-02"] != before["2024-03-02"]
    assert KEY.fullmatch(after["2024-03-02"]).group(2) == "2"


def test_a_file_rewritten_in_place_is_requested_again(landing):
    landing.land("2024-03-02", 1, b'{"a": 1}\n')
    keys = [requested(landing.tick())["2024-03-02"]]
    landing.land("2024-03-02", 1, b'{"a": 1}\n{"b": 2}\n')  # new content, new size
    keys.append(requested(landing.tick())["2024-03-02"])
    # Same size, new content: only the modification time tells.
    path = landing.root / name("2024-03-02", 1)
    stamp = path.stat().st_mtime
    path.write_bytes(b'{"a": 9}\n{"b": 2}\n')
    os.utime(path, (stamp + 5, stamp + 5))
    keys.append(requested(landing.tick())["2024-03-02"])
    assert len(set(keys)) == 3
    assert landing.tick().run_requests == []


def test_three_files_for_one_day_in_one_tick_give_one_request(landing):
    for part in (1, 2, 3):
        landing.land("2024-03-06", part)
    assert list(requested(landing.tick())) == ["2024-03-06"]


def test_keys_stay_fresh_when_a_day_returns_to_an_earlier_state(landing):
    landing.land("2024-03-02", 1)
    keys = [requested(landing.tick())["2024-03-02"]]
    landing.land("2024-03-02", 2)
    keys.append(requested(landing.tick())["2024-03-02"])
    landing.folder.remove(name("2024-03-02", 2))  # back to the very first file set
    keys.append(requested(landing.tick())["2024-03-02"])
    assert len(set(keys)) == 3
    assert KEY.fullmatch(keys[0]).group(3) == KEY.fullmatch(keys[2]).group(3)  # same files, new sequence


def test_a_tick_repeated_before_its_cursor_was_saved_repeats_its_keys(landing):
    landing.land("2024-03-02", 1)
    landing.tick()
    landing.land("2024-03-02", 2)
    landing.land("2024-03-07", 1)
    crashed = landing.tick(keep=False)
    again = landing.tick()
    assert requested(crashed) == requested(again)
    assert crashed.cursor == again.cursor


def test_temporary_and_hidden_files_are_ignored_silently(landing, capfd):
    landing.land("2024-03-02", 1)
    landing.tick()
    capfd.readouterr()
    (landing.root / f".{name('2024-03-02', 2)}.0123abcd.tmp").write_bytes(b'{"half": ')
    (landing.root / ".DS_Store").write_bytes(b"")
    assert landing.tick().run_requests == []
    assert "tmp" not in capfd.readouterr().err


def test_links_special_files_and_odd_names_are_refused_and_logged(landing, tmp_path, capfd):
    secret = tmp_path / "secret.jsonl"
    secret.write_bytes(b'{"password": "hunter2"}\n')
    os.symlink(secret, landing.root / name("2024-03-03", 1))
    os.mkfifo(landing.root / name("2024-03-03", 2))
    landing.land("2024-03-04", 1)
    (landing.root / "clickstream_2024-03-03_0 1.jsonl").write_bytes(b"{}\n")
    (landing.root / "clickstream_2024-02-30_01.jsonl").write_bytes(b"{}\n")
    (landing.root / "clickstream_latest.jsonl").write_bytes(b"{}\n")
    data = landing.tick()
    assert list(requested(data)) == ["2024-03-04"]
    assert "2024-03-03" not in json.loads(data.cursor)["days"]
    log = capfd.readouterr().err
    assert re.search(r"WARNING.*refused: a symbolic link.*clickstream_2024-03-03_01\.jsonl", log)
    assert re.search(r"WARNING.*refused: not a regular file.*clickstream_2024-03-03_02\.jsonl", log)
    assert re.search(r"WARNING.*refused: not a plain file name.*'clickstream_2024-03-03_0 1\.jsonl'", log)
    assert re.search(
        rf"WARNING.*{re.escape(NO_DELIVERY_DAY)}.*clickstream_2024-02-30_01.*clickstream_latest", log
    )
    assert "hunter2" not in log


def test_days_before_the_first_partition_are_logged_and_never_requested(landing, capfd):
    landing.land("2024-02-28", 1)
    data = landing.tick()
    assert data.run_requests == []
    assert json.loads(data.cursor)["days"] == {}
    assert re.search(
        r"WARNING.*before the first partition \(2024-03-01\).*2024-02-28", capfd.readouterr().err
    )


def test_a_file_for_a_day_not_yet_complete_waits_until_the_day_is_a_partition(landing, capfd):
    landing.land("2024-03-10", 1)  # today: not a partition until midnight
    landing.land("2024-03-12", 1)  # clock skew at the sender
    data = landing.tick()
    assert data.run_requests == []
    assert json.loads(data.cursor)["days"] == {}  # pending, not seen
    assert re.search(
        r"2 landed file\(s\) wait for their delivery day.*2024-03-10.*2024-03-12", capfd.readouterr().err
    )
    assert landing.tick(now=NOW + dt.timedelta(hours=12)).run_requests == []
    assert list(requested(landing.tick(now=NOW + dt.timedelta(days=1)))) == ["2024-03-10"]
    assert list(requested(landing.tick(now=NOW + dt.timedelta(days=3)))) == ["2024-03-12"]


@pytest.mark.parametrize(
    "cursor",
    [
        "not json",
        "[1, 2]",
        '{"days": {}}',
        '{"v": 2, "days": {}}',
        '{"v": 1, "days": []}',
        '{"v": 1, "days": {"2024-13-01": [1, "00"]}}',
        '{"v": 1, "days": {"2024-03-02": [0, "00"]}}',
        '{"v": 1, "days": {"2024-03-02": [true, "00"]}}',
        '{"v": 1, "days": {"2024-03-02": {"sequence": 1}}}',
    ],
)
def test_an_unreadable_cursor_is_logged_and_every_day_is_requested_again(landing, capfd, cursor):
    landing.land("2024-03-02", 1)
    landing.land("2024-03-08", 1)
    fresh = requested(landing.tick(keep=False))
    capfd.readouterr()
    data = landing.tick(cursor=cursor)
    assert requested(data) == fresh
    assert re.search(
        r"WARNING.*starting over: every delivery day with files is requested again", capfd.readouterr().err
    )
    assert landing.tick().run_requests == []  # the replaced cursor is a good one


def test_an_older_cursor_day_without_files_keeps_its_sequence(landing):
    landing.land("2024-03-02", 1)
    landing.tick()
    landing.folder.remove(name("2024-03-02", 1))
    assert landing.tick().run_requests == []  # a removal alone needs no run: the raw zone keeps it
    landing.land("2024-03-02", 2)
    assert KEY.fullmatch(requested(landing.tick())["2024-03-02"]).group(2) == "2"


def test_a_tick_over_ten_thousand_files_mostly_seen_requests_only_the_changed_day(landing):
    # How long such a tick takes is measured by benchmarks/bench_hot_paths.py, not here.
    days = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(9)]
    for i in range(10_000):
        (landing.root / name(days[i % len(days)], i // len(days))).write_bytes(b"{}\n")
    first = landing.tick()
    assert sorted(requested(first)) == days
    assert len(first.cursor) < 1_000  # per day, not per file
    landing.land(days[3], 9_999)
    assert list(requested(landing.tick())) == [days[3]]


# --- the planning function alone, without Dagster ----------------------------------------------------

DAYS = [(FIRST + dt.timedelta(days=i)).isoformat() for i in range(3)]
# A day's state: which of four files exist, each with a small size, a small modification time and an
# ETag (None: a local folder's file).
file_states = st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from([None, '"e1"', '"e2"']))
day_states = st.dictionaries(st.integers(0, 3), file_states, max_size=4)
folder_states = st.fixed_dictionaries({day: day_states for day in DAYS})


def files_of(state) -> list[LandedFile]:
    return [
        LandedFile(name(day, part), size, float(modified), etag=etag)
        for day, parts in state.items()
        for part, (size, modified, etag) in parts.items()
    ]


def test_digests_of_files_without_etags_did_not_change_so_saved_cursors_stay_valid():
    files = [
        LandedFile(name("2024-03-02", 1), 10, 1709337600.0),
        LandedFile(name("2024-03-02", 2), 7, 1709337601.5),
    ]
    assert files_digest(files) == "65bb105d44209646"  # computed before ETags were part of the digest
    assert files_digest([files[0], dataclasses.replace(files[1], etag='"e"')]) != "65bb105d44209646"


@settings(max_examples=200, deadline=None)
@given(st.lists(folder_states, min_size=1, max_size=8))
def test_every_change_of_a_day_gets_exactly_one_fresh_key(states):
    marks: dict = {}
    used: set[str] = set()
    last_requested: dict[str, dict] = {}
    for state in states:
        plan = plan_landing(files_of(state), marks, first=FIRST, last=FIRST + dt.timedelta(days=5))
        again = plan_landing(files_of(state), marks, first=FIRST, last=FIRST + dt.timedelta(days=5))
        assert again == plan  # a repeated tick decides the same
        keys = {day: run_key(day, mark) for day, mark in plan.requests.items()}
        assert not used & set(keys.values())
        used |= set(keys.values())
        for day in DAYS:
            changed = bool(state[day]) and last_requested.get(day) != state[day]
            assert (day in plan.requests) == changed, (day, state[day], last_requested.get(day))
            if changed:
                last_requested[day] = state[day]
                assert plan.files[day] == len(state[day])
        marks = plan.marks
