"""Ingestion: raw captures of the source systems into the cold tier's raw zone."""
