"""de_assets: the data engineering lifecycle as Dagster software-defined assets."""
