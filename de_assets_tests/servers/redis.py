"""A real Redis server for tests: a throwaway instance on 127.0.0.1, started from Debian's binary.

It listens on a free loopback port, asks for a password (so tests can check it never leaks), keeps
nothing on disk (no snapshots, no append-only file) and works in its own temporary folder. Without
``redis-server`` every test that asks for it skips, naming the package to install.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from de_assets_tests.servers.processes import free_port, stop_process_group

READY_SECONDS = 30


@dataclass
class RedisServer:
    port: int
    password: str
    folder: Path
    process: subprocess.Popen[bytes]

    def url(self, database: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            stop_process_group(self.process, signal.SIGTERM)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _answers(port: int, password: str) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


def start_redis() -> RedisServer:
    """Start a new server (skips the calling test when Redis is not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "redis-server not found: install Debian's 'redis-server' package (.ci/run does) to run the "
            "Celery executor tests"
        )
    folder = Path(tempfile.mkdtemp(prefix="de_assets_redis_"))
    port, password = free_port(), secrets.token_hex(16)
    # The password goes in through the configuration on stdin, never on a command line others can see.
    config = f"port {port}\nbind 127.0.0.1\nsave ''\nappendonly no\ndir {folder}\nrequirepass {password}\n"
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "-"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals it and nothing else
        )
    assert process.stdin is not None
    process.stdin.write(config.encode())
    process.stdin.close()
    server = RedisServer(port=port, password=password, folder=folder, process=process)
    deadline = time.monotonic() + READY_SECONDS
    while not _answers(port, password):
        if process.poll() is not None or time.monotonic() > deadline:
            log = (folder / "server.log").read_text(errors="replace")
            server.stop()
            raise RuntimeError(f"redis-server did not start on 127.0.0.1:{port}:\n{log}")
        time.sleep(0.1)
    return server


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()
