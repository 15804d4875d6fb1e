"""Data management: the catalog's metadata (owners, column schemas, column lineage, code references)."""
