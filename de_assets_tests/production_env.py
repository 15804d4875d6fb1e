"""Settings of a production deployment for tests that only load settings (nothing is contacted)."""

PRODUCTION_STORES = {
    "DE_ASSETS_SOURCE_DB_URL": "postgresql+psycopg://shop@db.internal/shop",
    "DE_ASSETS_LANDING_DIR": "s3://landing-bucket/clickstream",
    "DE_ASSETS_HOT_URL": "postgresql+psycopg://warehouse:s3cret@db.internal/warehouse",
    "DE_ASSETS_COLD_URL": "s3://lake-bucket/cold",
    "DE_ASSETS_INSTANCE_DB_URL": "postgresql+psycopg2://dagster:s3cret@db.internal/dagster",
}
