"""Security undercurrent: identifier and path checks, secret redaction."""
