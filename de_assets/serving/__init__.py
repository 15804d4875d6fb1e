"""Serving: the BI mart, ML features and reverse ETL."""
