-- Least-privilege roles for de_assets on the shop's PostgreSQL database (production profile).
--
-- Run as the shop database's owner once its tables exist, and again after any change (idempotent):
--   psql "$SHOP_ADMIN_URL" -v ON_ERROR_STOP=1 -f deploy/postgres-roles.sql
-- Then give each role a password, never stored here: ALTER ROLE de_assets_ingest PASSWORD '...';
--   DE_ASSETS_SOURCE_DB_URL=postgresql+psycopg://de_assets_ingest:***@host/shop    (ingestion, sensors)
--   DE_ASSETS_SEGMENTS_DB_URL=postgresql+psycopg://de_assets_segments:***@host/shop (reverse ETL)
-- (The simulator of the generation stage writes the shop itself; on a real shop it does not run.)

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'de_assets_ingest') THEN
    CREATE ROLE de_assets_ingest LOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'de_assets_segments') THEN
    CREATE ROLE de_assets_segments LOGIN;
  END IF;
END $$;

-- Nobody creates objects in the shop's schema but its owner (PostgreSQL 15's default, made explicit).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Ingestion: reads the two source tables and nothing else; every transaction is read-only.
ALTER ROLE de_assets_ingest SET default_transaction_read_only = on;
GRANT USAGE ON SCHEMA public TO de_assets_ingest;
GRANT SELECT ON public.orders, public.customers TO de_assets_ingest;

-- Reverse ETL: its two tables only (created here by the owner, as de_assets/serving/reverse_etl.py
-- defines them), without access to the shop's own tables.
CREATE TABLE IF NOT EXISTS public.customer_segments (
  customer_id BIGINT PRIMARY KEY,
  segment VARCHAR(16) NOT NULL,
  computed_for_day VARCHAR(10) NOT NULL,
  synced_at TIMESTAMP WITH TIME ZONE NOT NULL
);
CREATE TABLE IF NOT EXISTS public.customer_segments_syncs (
  computed_for_day VARCHAR(10) PRIMARY KEY,
  synced_at TIMESTAMP WITH TIME ZONE NOT NULL,
  inserted INTEGER NOT NULL,
  updated INTEGER NOT NULL,
  unchanged INTEGER NOT NULL
);
GRANT USAGE ON SCHEMA public TO de_assets_segments;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.customer_segments, public.customer_segments_syncs
  TO de_assets_segments;
