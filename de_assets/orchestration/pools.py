"""Dagster pools: every step that opens a single-writer database goes through one of these.

The limits live in the instance configuration (``dagster.yaml``: ``concurrency.pools.default_limit``).
"""

# The embedded hot tier (DuckDB): one process writing blocks every other reader and writer.
HOT_TIER_POOL = "hot_tier"
# The embedded shop database (SQLite): one writer at a time.
SOURCE_DB_POOL = "source_db"
