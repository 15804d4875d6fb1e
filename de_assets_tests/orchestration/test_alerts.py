"""The alert sensor against real failing runs on a persistent instance, with a real HTTP receiver."""

import json
import logging
import socket

import dagster as dg
import pytest

from de_assets.orchestration import alerts
from de_assets.orchestration.alerts import (
    ALERT_WEBHOOK,
    CHECK_FAILURE,
    RUN_FAILURE,
    AlertCursor,
    AlertWebhookResource,
    Pending,
    WebhookError,
    append_alerts,
    build_alert_sensor,
    partitions_of,
    written_ids,
)
from de_assets_tests.webhook_receiver import WebhookReceiver

CANARY = "canary-token-5f1c"  # stands for a secret in the webhook URL
DATA = "4111-1111-1111-1111"  # stands for a data value that failures quote
DAY = "2026-11-10"


@dg.asset
def explodes() -> None:
    raise ValueError(f"cannot parse {DATA}")


@dg.asset(check_specs=[dg.AssetCheckSpec("must_hold", asset="guarded", blocking=True)])
def guarded():
    yield dg.Output(1)
    yield dg.AssetCheckResult(
        check_name="must_hold",
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"found {DATA}",
        metadata={"failing_value": DATA},
    )


@dg.asset(deps=[guarded])
def behind_guarded() -> None:
    return None


@dg.asset(
    partitions_def=dg.DailyPartitionsDefinition(start_date="2026-11-01"),
    check_specs=[
        dg.AssetCheckSpec("contract", asset="tolerant"),  # not blocking: the run succeeds
        dg.AssetCheckSpec("style", asset="tolerant"),
        dg.AssetCheckSpec("fine", asset="tolerant"),
    ],
)
def tolerant():
    yield dg.Output(1)
    yield dg.AssetCheckResult(check_name="contract", passed=False, severity=dg.AssetCheckSeverity.ERROR)
    yield dg.AssetCheckResult(check_name="style", passed=False, severity=dg.AssetCheckSeverity.WARN)
    yield dg.AssetCheckResult(check_name="fine", passed=True)


@dg.asset
def healthy() -> int:
    return 1


@pytest.fixture
def receiver():
    server = WebhookReceiver(CANARY)
    yield server
    server.close()


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as local:
        yield local


class Ticks:
    """Evaluates a sensor as the daemon would and keeps what the ticks logged (and nothing else)."""

    def __init__(self, capture, caplog) -> None:
        self.capture, self.caplog = capture, caplog
        self.logs = ""

    def __call__(self, sensor, instance, cursor, url):
        self.capture.readouterr()  # drop the runs' own logs: they quote their errors, on purpose
        self.caplog.clear()
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={ALERT_WEBHOOK: AlertWebhookResource(url=url)}
        )
        result = sensor(context)
        out, err = self.capture.readouterr()
        self.logs += out + err + self.caplog.text
        return result


@pytest.fixture
def tick(capfd, caplog):
    caplog.set_level(logging.DEBUG)
    return Ticks(capfd, caplog)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _fail_runs(instance) -> dict[str, str]:
    """Run ids by what happened: a crash, a blocking ERROR check, a non-blocking one, a clean run."""
    runs = {
        "explodes": dg.materialize([explodes], instance=instance, raise_on_error=False),
        "guarded": dg.materialize([guarded, behind_guarded], instance=instance, raise_on_error=False),
        "tolerant": dg.materialize([tolerant], instance=instance, partition_key=DAY),
        "healthy": dg.materialize([healthy], instance=instance),
    }
    assert [r.success for r in runs.values()] == [False, False, True, True]
    return {name: result.run_id for name, result in runs.items()}


def test_each_failed_run_and_failed_error_check_is_alerted_once_and_posted(
    tmp_path, instance, receiver, tick
):
    alerts_file = tmp_path / "home" / "alerts.jsonl"
    sensor = build_alert_sensor(alerts_file=alerts_file, minimum_interval_seconds=30)
    runs = _fail_runs(instance)

    result = tick(sensor, instance, None, receiver.url)
    lines = _lines(alerts_file)
    assert sorted((a["kind"], a["run_id"], a["asset"], a["check"], a["partitions"]) for a in lines) == sorted(
        [
            (RUN_FAILURE, runs["explodes"], None, None, None),
            (RUN_FAILURE, runs["guarded"], None, None, None),
            (CHECK_FAILURE, runs["guarded"], "guarded", "must_hold", None),
            (CHECK_FAILURE, runs["tolerant"], "tolerant", "contract", DAY),
        ]
    )
    by_kind = {(a["kind"], a["run_id"]): a for a in lines}
    assert "explodes" in by_kind[RUN_FAILURE, runs["explodes"]]["message"]
    assert all(a["job"] == "__ephemeral_asset_job__" and a["time"].endswith("+00:00") for a in lines)
    # The same JSON went to the webhook, at the configured URL (query included).
    assert [body for _path, body in receiver.received] == lines
    assert {path for path, _body in receiver.received} == {f"/hook?token={CANARY}"}
    text = alerts_file.read_text()
    for secret in (CANARY, DATA):
        assert secret not in text
        assert secret not in result.cursor
        assert secret not in tick.logs
    assert "4 new alert(s)" in tick.logs  # the log was captured, so the check above can fail

    # Later ticks, and a restarted process (a new instance object on the same storage), add nothing.
    assert isinstance(tick(sensor, instance, result.cursor, receiver.url), dg.SkipReason)
    with dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home")) as restarted:
        again = build_alert_sensor(alerts_file=alerts_file, minimum_interval_seconds=30)
        assert isinstance(tick(again, restarted, result.cursor, receiver.url), dg.SkipReason)
        # A new failure is alerted on the next tick, and only it.
        failed = dg.materialize([explodes], instance=restarted, raise_on_error=False)
        later = tick(again, restarted, result.cursor, receiver.url)
    assert [a["run_id"] for a in _lines(alerts_file)[len(lines) :]] == [failed.run_id]

    # A tick whose cursor was lost after it wrote (the process died) writes nothing twice; the webhook
    # may see a repeat, recognisable by the alert id.
    written = alerts_file.read_text()
    posts = len(receiver.received)
    tick(sensor, instance, None, receiver.url)
    assert alerts_file.read_text() == written
    repeated = [body["id"] for _path, body in receiver.received[posts:]]
    assert sorted(repeated) == sorted(a["id"] for a in _lines(alerts_file))
    assert AlertCursor.parse(later.cursor).pending == []


def test_a_webhook_that_is_down_or_refuses_never_breaks_the_tick_and_is_retried(
    tmp_path, instance, receiver, tick
):
    alerts_file = tmp_path / "alerts.jsonl"
    sensor = build_alert_sensor(alerts_file=alerts_file, minimum_interval_seconds=30)
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{probe.getsockname()[1]}/hook?token={CANARY}"
    dg.materialize([explodes], instance=instance, raise_on_error=False)

    first = tick(sensor, instance, None, down)
    assert [a["kind"] for a in _lines(alerts_file)] == [RUN_FAILURE]  # recorded whatever the webhook does
    assert [p.attempts for p in AlertCursor.parse(first.cursor).pending] == [1]
    assert "ConnectionRefusedError" in tick.logs
    assert CANARY not in tick.logs

    # The receiver is up but refuses: the next tick tries once (the oldest), keeps both waiting.
    receiver.status = 500
    dg.materialize([explodes], instance=instance, raise_on_error=False)
    second = tick(sensor, instance, first.cursor, receiver.url)
    assert len(receiver.received) == 1
    assert [p.attempts for p in AlertCursor.parse(second.cursor).pending] == [2, 0]
    assert "HTTP 500" in tick.logs

    receiver.status = 200
    third = tick(sensor, instance, second.cursor, receiver.url)
    assert AlertCursor.parse(third.cursor).pending == []
    assert [body for _path, body in receiver.received[1:]] == _lines(alerts_file)
    assert CANARY not in tick.logs
    assert CANARY not in alerts_file.read_text()


def test_a_backlog_is_read_over_several_ticks_without_skipping_or_repeating(
    tmp_path, instance, tick, monkeypatch
):
    monkeypatch.setattr(alerts, "PAGE_SIZE", 1)  # one finished run per status and tick
    alerts_file = tmp_path / "alerts.jsonl"
    sensor = build_alert_sensor(alerts_file=alerts_file, minimum_interval_seconds=30)
    failed = [dg.materialize([explodes], instance=instance, raise_on_error=False).run_id for _ in range(3)]
    dg.materialize([healthy], instance=instance)
    failed.append(dg.materialize([explodes], instance=instance, raise_on_error=False).run_id)
    cursor, ticks = None, 0
    while not isinstance(result := tick(sensor, instance, cursor, ""), dg.SkipReason):
        cursor, ticks = result.cursor, ticks + 1
    assert ticks >= len(failed)  # a page of one: the backlog took several ticks
    assert [a["run_id"] for a in _lines(alerts_file)] == failed


def test_without_a_webhook_alerts_are_only_written(tmp_path, instance, tick):
    alerts_file = tmp_path / "alerts.jsonl"
    sensor = build_alert_sensor(alerts_file=alerts_file, minimum_interval_seconds=30)
    dg.materialize([explodes], instance=instance, raise_on_error=False)
    result = tick(sensor, instance, None, "")
    assert len(_lines(alerts_file)) == 1
    assert AlertCursor.parse(result.cursor).pending == []


def test_a_run_s_partition_or_range_is_named():
    assert partitions_of({"dagster/partition": DAY}) == DAY
    assert (
        partitions_of(
            {"dagster/asset_partition_range_start": DAY, "dagster/asset_partition_range_end": "2026-11-12"}
        )
        == f"{DAY}...2026-11-12"
    )
    assert partitions_of({}) is None


def test_the_cursor_round_trips_its_pending_alerts():
    cursor = AlertCursor(42, [Pending({"id": "a", "kind": RUN_FAILURE}, 3)])
    assert AlertCursor.parse(cursor.dump()) == cursor
    assert AlertCursor.parse(None) == AlertCursor(0, [])


def test_a_torn_last_line_is_ignored_and_never_glued_to_the_next(tmp_path):
    path = tmp_path / "alerts.jsonl"
    append_alerts(path, [{"id": "one"}])
    with path.open("a") as file:
        file.write('{"id": "tor')  # a crash in the middle of a write
    append_alerts(path, [{"id": "two"}])
    assert written_ids(path) == {"one", "two"}
    assert path.read_text().splitlines()[-1] == '{"id": "two"}'


def test_a_webhook_error_never_names_the_url():
    with pytest.raises(WebhookError) as raised:
        AlertWebhookResource(url=f"ftp://user:{CANARY}@example.invalid/").post({"id": "x"})
    assert CANARY not in str(raised.value)
