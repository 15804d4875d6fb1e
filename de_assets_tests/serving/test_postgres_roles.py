"""deploy/postgres-roles.sql on a real PostgreSQL: each role reaches what it needs and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from de_assets.ingestion.source_reader import read_only_engine
from de_assets.serving import reverse_etl
from de_assets.serving.reverse_etl import segments_writer
from de_assets_tests.serving.test_reverse_etl import DAY, FIRST, SHOP_TABLES, T1, make_shop, segments

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres-roles.sql"


def run_script(server, url: str) -> None:
    """As an administrator would: psql with ON_ERROR_STOP."""
    psql = server.bin_folder / "psql"
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    subprocess.run(
        [str(psql), libpq, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(SCRIPT)], check=True, capture_output=True
    )


def as_role(url: str, role: str) -> str:
    return str(sa.make_url(url).set(username=role))


@pytest.fixture
def shop(postgres_server) -> str:
    url = make_shop(postgres_server.create_database("shop"))
    run_script(postgres_server, url)
    run_script(postgres_server, url)  # idempotent: a second run changes nothing and does not fail
    return url


def fetch(url: str, statement: str) -> list[tuple]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(statement).all()]
    finally:
        engine.dispose()


def shop_rows(url: str) -> dict[str, list[tuple]]:
    return {t: fetch(url, f"SELECT * FROM {t} ORDER BY 1") for t in SHOP_TABLES}


def test_the_segments_role_syncs_and_touches_nothing_else(shop):
    writer = as_role(shop, "de_assets_segments")
    before = shop_rows(shop)
    with segments_writer(writer) as engine:
        result = reverse_etl.sync_segments(engine, segments(FIRST), DAY, T1)
    assert result.inserted == len(FIRST)
    assert fetch(shop, "SELECT customer_id, segment FROM customer_segments ORDER BY 1") == sorted(
        FIRST.items()
    )
    for statement in (
        "SELECT * FROM customers",
        "SELECT count(*) FROM orders",
        "UPDATE orders SET amount = 0",
        "DELETE FROM customers",
        "DROP TABLE orders",
        "ALTER TABLE customers ADD COLUMN segment TEXT",
        "CREATE TABLE another (x INTEGER)",
        "INSERT INTO customer_segments SELECT customer_id, 'new', '2024-06-10', now() FROM customers",
    ):
        with (
            segments_writer(writer) as engine,
            engine.begin() as conn,
            pytest.raises(sa.exc.ProgrammingError, match=r"permission denied|must be owner"),
        ):
            conn.exec_driver_sql(statement)
    assert shop_rows(shop) == before


def test_the_ingest_role_reads_the_sources_and_writes_nothing(shop):
    reader = as_role(shop, "de_assets_ingest")
    with read_only_engine(reader) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM orders").scalar() == 5
    # Even without the read-only connection ingestion asks for, the role cannot write or see segments.
    for statement, refusal in (
        ("UPDATE orders SET amount = 0", "read-only transaction"),
        ("SELECT * FROM customer_segments", "permission denied"),
        ("CREATE TABLE another (x INTEGER)", "read-only transaction|permission denied"),
    ):
        engine = sa.create_engine(reader, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn, pytest.raises(sa.exc.DBAPIError, match=refusal):
                conn.exec_driver_sql(statement)
        finally:
            engine.dispose()


def test_the_scripts_tables_are_the_ones_reverse_etl_defines(shop, postgres_server):
    reference = postgres_server.create_database("reference")
    engine = sa.create_engine(reference, poolclass=sa.pool.NullPool)
    try:
        reverse_etl.metadata.create_all(engine)
    finally:
        engine.dispose()
    columns = (
        "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable "
        "FROM information_schema.columns WHERE table_name LIKE 'customer_segments%%' ORDER BY 1, ordinal_position"
    )
    keys = (
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc "
        "JOIN information_schema.key_column_usage kcu USING (constraint_name, table_name) "
        "WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_name LIKE 'customer_segments%%' ORDER BY 1, 2"
    )
    assert fetch(shop, columns) == fetch(reference, columns)
    assert fetch(shop, keys) == fetch(reference, keys)
