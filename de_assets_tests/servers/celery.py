"""Real Celery workers for tests: `de-assets worker` processes, each in its own process group."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from de_assets_tests.servers.processes import stop_process_group

READY_SECONDS = 60


@contextmanager
def celery_workers(
    env: Mapping[str, str], logs: Path, names: Sequence[str]
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """One `de-assets worker` per name (one step at a time each), ready when this yields; their output
    goes to ``<logs>/<name>.log``. Stopped with Celery's warm shutdown, and nothing may be left."""
    cli = Path(sys.executable).with_name("de-assets")
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in names:
            with (logs / f"{name}.log").open("wb") as log:
                workers[name] = subprocess.Popen(
                    [str(cli), "worker", "--name", name, "--concurrency", "1"],
                    env=dict(env),
                    cwd=logs,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        deadline = time.monotonic() + READY_SECONDS
        for name, process in workers.items():
            log = logs / f"{name}.log"
            while f"{name}@{socket.gethostname()} ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"worker {name} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.2)
        yield workers
    finally:
        # Every worker is stopped even when one of them leaves something behind; then that fails.
        leftovers: list[str] = []
        for process in workers.values():
            try:
                stop_process_group(process, signal.SIGTERM)  # Celery's warm shutdown
            except AssertionError as error:
                leftovers.append(str(error))
        assert not leftovers, leftovers
