"""A real `de-assets dev` on loopback for tests: start, ask GraphQL, stop cleanly, leave nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from de_assets_tests.servers.processes import free_port, stop_process_group

READY_SECONDS = 120


class DevServer:
    def __init__(self, port: int, process: subprocess.Popen) -> None:
        self.port = port
        self.process = process

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"de-assets dev exited early with {self.process.returncode}")
            try:
                if self.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]:
                    return
            except (OSError, KeyError, TypeError, AssertionError):
                pass
            time.sleep(1)
        pytest.fail(f"de-assets dev was not ready within {READY_SECONDS} s")


@contextmanager
def dev_server(home: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[DevServer]:
    """`de-assets dev` in its own process group (so SIGINT reaches it and all its children)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME" and not k.startswith("DE_ASSETS_")}
    env.update({"DE_ASSETS_HOME": str(home), **(extra_env or {})})
    cli = Path(sys.executable).with_name("de-assets")
    log = (home / "dev-server.log").open("wb")
    process = subprocess.Popen(
        [str(cli), "dev", "--port", str(port)],
        env=env,
        cwd=home,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        server = DevServer(port, process)
        server.wait_ready()
        yield server
    finally:
        # The code server, daemon and runs wind down on their own after the webserver exits.
        stop_process_group(process, signal.SIGINT)
        log.close()
