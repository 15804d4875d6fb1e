"""Orchestration undercurrent: partitions, pools, jobs and the local Dagster instance."""
