"""Alerts: a failed run or a failed ERROR-severity asset check becomes one alert, written and sent once.

Each alert is a JSON line appended to ``<home>/alerts.jsonl`` and, when ``DE_ASSETS_ALERT_WEBHOOK_URL``
is set, POSTed as the same JSON to that URL. An alert names what failed (kind, time, run, job, asset,
check, partitions) and never carries data values or secrets: the message is composed here from names
only, never from exception texts or check metadata, which can quote the data.

Why one ``@sensor`` over finished runs rather than ``@run_failure_sensor`` plus a check sensor:

- a failed ERROR check of a non-blocking check (the data contract, say) leaves the run successful, so a
  run-failure sensor never sees it (dagster-io/dagster#29896), and a blocking one fails the run, so
  both kinds come from the same finished runs anyway;
- Dagster's public instance API lists finished runs across the event log by storage id
  (:meth:`dagster.DagsterInstance.fetch_run_status_changes`), but offers no non-deprecated query for
  check evaluations across runs (``get_event_records`` is deprecated), so checks are read per finished
  run;
- one cursor then covers both, so one tick can never alert a run twice or miss one.

Exactly once: the cursor is the storage id of the last finished-run event handled. Alerts are written
before Dagster stores the new cursor, so a process killed in between would write them again on the
next tick; to prevent that, an alert whose ``id`` (run id, kind, asset, check, partitions: unique
across instances, as run ids are UUIDs) is already among the file's last lines is not written again.
The webhook is best effort on top: an alert it did not accept waits in the cursor and is retried on
the next ticks (the stable ``id`` lets the receiver drop a repeat after a timeout); while the webhook
is down a tick tries one POST only, so it stays short.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from de_assets.orchestration.partitions import RANGE_END, RANGE_START
from de_assets.security.redaction import RedactedRepr

SENSOR_NAME = "alert_sensor"
ALERT_WEBHOOK = "alert_webhook"  # the resource key, and the sensor's parameter name
RUN_FAILURE = "run_failure"
CHECK_FAILURE = "check_failure"
PARTITION_TAG = "dagster/partition"

# Runs that finished; failed checks are alerted whatever the run's outcome.
FINISHED = (
    dg.DagsterEventType.RUN_SUCCESS,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.RUN_CANCELED,
)
PAGE_SIZE = 100
# Short: a tick must not hang on a slow receiver (Dagster times a sensor evaluation out at 60 s).
TIMEOUT_SECONDS = 5.0
# About ten minutes of ticks at the default interval before an undeliverable alert is given up on
# (it stays in the alerts file); the cap keeps the cursor small during a long outage.
MAX_ATTEMPTS = 20
MAX_PENDING = 200
# How much of the file's end is read for the ids already written: over 2,000 alerts, more than a
# tick can write (its PAGE_SIZE runs per status, with a failure and a few failed checks each).
TAIL_BYTES = 1024 * 1024


class WebhookError(Exception):
    """The webhook did not accept an alert; the message names the cause and never the URL."""


class AlertWebhookResource(RedactedRepr, dg.ConfigurableResource):
    """Where alerts are POSTed as JSON; an empty URL sends nothing."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("url",)  # it may carry a token

    url: str = Field(
        default="",
        description="http(s) URL receiving each alert as a JSON POST; empty: no webhook. Give it as "
        "EnvVar (DE_ASSETS_ALERT_WEBHOOK_URL): it may carry a token.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def post(self, alert: Mapping[str, Any]) -> None:
        """Send one alert; raises :class:`WebhookError` when it was not accepted."""
        if not self.url.lower().startswith(("http://", "https://")):
            raise WebhookError("not an http(s) URL")
        request = urllib.request.Request(
            self.url,
            data=json.dumps(alert).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        # Causes are reduced to a status code or an exception class: urllib's messages can quote the
        # URL (and its token), so none of them is kept, chained or logged.
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
                return
        except urllib.error.HTTPError as error:
            cause = f"HTTP {error.code}"
        except urllib.error.URLError as error:
            cause = type(error.reason).__name__ if isinstance(error.reason, BaseException) else "URLError"
        except (OSError, ValueError, http.client.HTTPException) as error:
            cause = type(error).__name__
        raise WebhookError(cause)


@dataclass
class Pending:
    """An alert the webhook has not accepted yet."""

    alert: dict[str, Any]
    attempts: int = 0


@dataclass
class AlertCursor:
    """The storage id of the last finished-run event handled, and the alerts still to be sent."""

    after: int = 0
    pending: list[Pending] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str | None) -> AlertCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(int(data["after"]), [Pending(p["alert"], int(p["attempts"])) for p in data["pending"]])

    def dump(self) -> str:
        pending = [{"alert": p.alert, "attempts": p.attempts} for p in self.pending]
        return json.dumps({"after": self.after, "pending": pending}, sort_keys=True)


def partitions_of(tags: Mapping[str, str]) -> str | None:
    """The partition a run covered, or its range as ``first...last`` (the CLI's notation)."""
    if PARTITION_TAG in tags:
        return tags[PARTITION_TAG]
    first, last = tags.get(RANGE_START), tags.get(RANGE_END)
    if first and last:
        return first if first == last else f"{first}...{last}"
    return None


def _time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _alert(
    kind: str,
    *,
    timestamp: float,
    run_id: str,
    job: str,
    message: str,
    asset: str | None = None,
    check: str | None = None,
    partitions: str | None,
) -> dict[str, Any]:
    return {
        # Stable across retries, so that a receiver can drop a repeated POST.
        "id": ":".join(part for part in (run_id, kind, asset, check, partitions) if part),
        "kind": kind,
        "time": _time(timestamp),
        "run_id": run_id,
        "job": job,
        "asset": asset,
        "check": check,
        "partitions": partitions,
        "message": message,
    }


def alerts_for_run(instance: dg.DagsterInstance, finished: dg.EventLogRecord) -> list[dict[str, Any]]:
    """The alerts of one finished run: its failure, and each failed ERROR check evaluated in it."""
    run_id = finished.run_id
    run = instance.get_run_by_id(run_id)
    job = run.job_name if run is not None else "unknown"
    run_partitions = partitions_of(run.tags) if run is not None else None
    entries = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    )
    alerts = []
    if finished.event_type == dg.DagsterEventType.RUN_FAILURE:
        steps = sorted(
            {
                e.step_key
                for e in entries
                if e.dagster_event_type == dg.DagsterEventType.STEP_FAILURE and e.step_key
            }
        )
        alerts.append(
            _alert(
                RUN_FAILURE,
                timestamp=finished.timestamp,
                run_id=run_id,
                job=job,
                partitions=run_partitions,
                # Step names only: a step's error text may quote the data it choked on.
                message=f"run of {job} failed; failed steps: {', '.join(steps)}"
                if steps
                else f"run of {job} failed outside its steps",
            )
        )
    for entry in entries:
        if entry.dagster_event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            continue
        evaluation = entry.get_dagster_event().asset_check_evaluation_data
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        asset = evaluation.asset_key.to_user_string()
        alerts.append(
            _alert(
                CHECK_FAILURE,
                timestamp=entry.timestamp,
                run_id=run_id,
                job=job,
                asset=asset,
                check=evaluation.check_name,
                partitions=evaluation.partition or run_partitions,
                # Names only: the check's description and metadata can quote failing values.
                message=f"ERROR check {evaluation.check_name} on {asset} failed"
                + ("; downstream steps were blocked" if evaluation.blocking else ""),
            )
        )
    return alerts


def read_finished_runs(instance: dg.DagsterInstance, after: int) -> list[dg.EventLogRecord]:
    """Finished-run events stored after ``after``, in storage order; a backlog is read over several ticks.

    Each status is read a page at a time; records past the end of a full page of another status are
    left for the next tick, so the cursor (the last record returned) never skips one.
    """
    pages = [
        instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(event_type=status, after_storage_id=after),
            limit=PAGE_SIZE,
            ascending=True,
        )
        for status in FINISHED
    ]
    full = [page.records[-1].storage_id for page in pages if page.has_more]
    records = sorted((r for page in pages for r in page.records), key=lambda r: r.storage_id)
    return [r for r in records if not full or r.storage_id <= min(full)]


def written_ids(path: Path) -> set[str]:
    """The ids of the alerts in the file's last :data:`TAIL_BYTES` (a torn line has none)."""
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            file.seek(max(0, file.tell() - TAIL_BYTES))
            lines = file.read().splitlines()
    except FileNotFoundError:
        return set()
    ids = set()
    for raw in lines:
        try:
            alert = json.loads(raw)
        except ValueError:  # the first line cut by the seek, or one torn by a crash
            continue
        if isinstance(alert, dict) and isinstance(alert.get("id"), str):
            ids.add(alert["id"])
    return ids


def append_alerts(path: Path, alerts: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(alert, sort_keys=True) + "\n" for alert in alerts)
    with path.open("a+b") as file:
        # A line torn by a crash ends without a newline: start on a fresh line, never glued to it.
        file.seek(0, 2)
        if file.tell():
            file.seek(-1, 2)
            if file.read(1) != b"\n":
                text = "\n" + text
        file.write(text.encode())


def deliver(webhook: AlertWebhookResource, queue: list[Pending], log: dg.DagsterLogManager) -> list[Pending]:
    """POST the queued alerts in order; the ones not accepted (to retry next tick) are returned."""
    if not webhook.enabled:
        return []
    waiting: list[Pending] = []
    cause = None
    for item in queue:
        if cause is None:
            try:
                webhook.post(item.alert)
                continue
            except WebhookError as error:
                cause = str(error)
                item.attempts += 1
        waiting.append(item)
    if cause is None:
        return []
    given_up = [p for p in waiting if p.attempts >= MAX_ATTEMPTS]
    waiting = [p for p in waiting if p.attempts < MAX_ATTEMPTS]
    given_up += waiting[:-MAX_PENDING] if len(waiting) > MAX_PENDING else []
    waiting = waiting[-MAX_PENDING:]
    log.warning(
        f"alert webhook did not accept an alert ({cause}); {len(waiting)} alert(s) wait for the next tick"
    )
    if given_up:
        log.error(
            f"gave up sending {len(given_up)} alert(s) to the webhook (they stay in the alerts file): "
            + ", ".join(p.alert["id"] for p in given_up)
        )
    return waiting


def build_alert_sensor(*, alerts_file: Path, minimum_interval_seconds: int) -> dg.SensorDefinition:
    """The sensor that turns failed runs and failed ERROR checks into alerts (resource ``alert_webhook``).

    Cursor: JSON ``{"after": <storage id of the last finished-run event handled>, "pending": [alerts
    the webhook has not accepted yet, with their attempts]}``.
    """

    @dg.sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Appends an alert to {alerts_file.name} (and POSTs it to the alert webhook when "
        "DE_ASSETS_ALERT_WEBHOOK_URL is set) for every failed run and every failed ERROR-severity asset "
        "check, exactly once.",
    )
    def alert_sensor(
        context: dg.SensorEvaluationContext, alert_webhook: AlertWebhookResource
    ) -> dg.SensorResult | dg.SkipReason:
        state = AlertCursor.parse(context.cursor)
        finished = read_finished_runs(context.instance, state.after)
        if not finished and not state.pending:
            return dg.SkipReason(f"no run finished after storage id {state.after}")
        alerts = [alert for record in finished for alert in alerts_for_run(context.instance, record)]
        # After a tick that wrote but could not store its cursor, those alerts are not written again;
        # they are sent again, as that tick may have died before sending them (the id marks repeats).
        written = written_ids(alerts_file) if alerts else set()
        new = [alert for alert in alerts if alert["id"] not in written]
        if new:
            append_alerts(alerts_file, new)
            context.log.info(f"{len(new)} new alert(s) written to {alerts_file.name}")
        queue = [*state.pending, *(Pending(alert) for alert in alerts)]
        after = finished[-1].storage_id if finished else state.after
        cursor = AlertCursor(after, deliver(alert_webhook, queue, context.log))
        return dg.SensorResult(
            skip_reason=f"{len(alerts)} new alert(s) from {len(finished)} finished run(s)",
            cursor=cursor.dump(),
        )

    return alert_sensor
