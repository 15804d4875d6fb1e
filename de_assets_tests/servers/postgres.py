"""A real PostgreSQL server for tests: a throwaway cluster on 127.0.0.1, started from the Debian binaries.

The cluster lives in a temporary folder, listens on a free loopback port (and a socket in its own
folder), trusts local connections and runs without fsync: it exists for one test session. PostgreSQL
refuses to run as root, so under root the server runs as the ``postgres`` user (``nobody`` without it).
Without the binaries every test that asks for it skips, naming the package to install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from de_assets_tests.servers.processes import free_port, stop_process_group

SUPERUSER = "postgres"


def _binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps it off PATH), or PATH's."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> str | None:
    """Who runs the server: ourselves, or (as root, which PostgreSQL refuses) an unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
    return None


@dataclass
class PostgresServer:
    """A running cluster: URLs for the superuser and fresh databases on demand."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes]
    bin_folder: Path  # initdb, postgres, psql...

    def url(self, database: str = "postgres", user: str = SUPERUSER, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its SQLAlchemy URL (psycopg 3)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            engine.dispose()
        return self.url(name)

    def execute(self, url: str, *statements: str) -> None:
        """Run statements as given (DDL, grants) on ``url``, committed."""
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.exec_driver_sql(statement)
        finally:
            engine.dispose()

    def stop(self) -> None:
        # SIGINT = "fast" shutdown: running transactions are rolled back, clients disconnected.
        try:
            stop_process_group(self.process, signal.SIGINT)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _run(command: list[str], user: str | None) -> None:
    result = subprocess.run(command, user=user, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")


def start_postgres() -> PostgresServer:
    """Start a new cluster (skips the calling test when PostgreSQL is not installed)."""
    bin_folder = _binaries()
    if bin_folder is None:
        pytest.skip(
            "PostgreSQL server binaries not found (initdb, postgres): install Debian's 'postgresql' "
            "package (.ci/run does) to run the production-profile tests"
        )
    user = _server_user()
    # Under /tmp itself, not pytest's per-user base folder: that one is private to root.
    folder = Path(tempfile.mkdtemp(prefix="de_assets_pg_"))
    data = folder / "data"
    if user is not None:
        account = pwd.getpwnam(user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    initdb = [str(bin_folder / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
    try:
        _run([*initdb, "-E", "UTF8", "--no-sync", "--locale=C.UTF-8"], user)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    if user is not None:
        os.chown(folder / "server.log", pwd.getpwnam(user).pw_uid, -1)
    process = subprocess.Popen(
        [
            str(bin_folder / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            str(folder),
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ],
        user=user,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() signals the server and its children
    )
    log.close()
    server = PostgresServer(port=port, folder=folder, process=process, bin_folder=bin_folder)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool)
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")
            finally:
                engine.dispose()
            return server
        except (OSError, sa.exc.OperationalError):
            if process.poll() is not None or time.monotonic() > deadline:
                text = (folder / "server.log").read_text(errors="replace")
                server.stop()
                raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{port}:\n{text}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
