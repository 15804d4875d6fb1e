"""`de-assets dev` really starts Dagster with the project's instance configuration.

Starts the real webserver, daemon and code server on loopback, asks GraphQL what it loaded, and
stops it with SIGINT, checking that no process is left behind.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

READY_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["data"]


def _group(pgid: int) -> list[str]:
    listing = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(pgid)], capture_output=True, text=True)
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def _wait_ready(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"de-assets dev exited early with {process.returncode}")
        try:
            nodes = _graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
            if nodes:
                return
        except (OSError, KeyError, TypeError):
            pass
        time.sleep(1)
    pytest.fail(f"de-assets dev was not ready within {READY_SECONDS} s")


def test_dev_server_loads_the_project_and_its_pool_limits(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["DE_ASSETS_HOME"] = str(tmp_path)
    cli = Path(sys.executable).with_name("de-assets")
    process = subprocess.Popen(
        [str(cli), "dev", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_ready(port, process)
        data = _graphql(
            port,
            "{ assetNodes { assetKey { path } groupName } "
            "instance { poolConfig { defaultPoolLimit poolGranularity } runQueueConfig { maxConcurrentRuns } } }",
        )
        keys = {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}
        assert {("generation", "shop_database"), ("generation", "clickstream_landing")} <= keys
        assert data["instance"]["poolConfig"]["defaultPoolLimit"] == 1
        assert data["instance"]["runQueueConfig"]["maxConcurrentRuns"] == 4
        assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # The code server and daemon wind down on their own after the webserver exits.
    deadline = time.monotonic() + 30
    while (leftovers := _group(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if leftovers:
        os.killpg(process.pid, signal.SIGKILL)
    assert not leftovers, f"processes left behind by dagster dev: {leftovers}"
