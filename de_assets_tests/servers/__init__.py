"""Real servers the production-profile tests start on 127.0.0.1 (as pytest fixtures)."""
