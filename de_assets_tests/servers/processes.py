"""Processes the tests start (servers, workers): a free loopback port, and a stop that leaves nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def processes_in_group(pgid: int) -> list[str]:
    listing = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True)
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def stop_process_group(
    process: subprocess.Popen[bytes], stop_signal: signal.Signals, settle_seconds: float = 30
) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started.

    ``stop_signal`` goes to the whole group (the program's clean shutdown); SIGKILL follows if the
    leader lingers, or if any of its processes are still there ``settle_seconds`` later, and then the
    test fails, naming them.
    """
    if process.poll() is None:
        os.killpg(process.pid, stop_signal)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    deadline = time.monotonic() + settle_seconds
    while (leftovers := processes_in_group(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if leftovers:
        os.killpg(process.pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind by {process.args}: {leftovers}"
