"""Storage underneath the lifecycle: the hot (SQL) and cold (Parquet) tiers as IO managers."""
