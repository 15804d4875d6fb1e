"""Transformation: typed, deduplicated, validated tables built from the raw zone alone."""
