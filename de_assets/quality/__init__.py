"""Data quality: contracts, pandera models, conservation and control-chart checks."""
