"""Fixtures shared by every test package: real servers started once per session, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from de_assets_tests.servers.postgres import PostgresServer, start_postgres

# The S3-compatible server (moto) and its per-test buckets.
pytest_plugins = ["de_assets_tests.servers.s3"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (skips the test without the binaries); tests take a
    fresh database each through :meth:`PostgresServer.create_database`."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
