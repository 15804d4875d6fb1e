# Fixtures shared across the test folders: the real servers the production-profile tests start.
pytest_plugins = ["de_assets_tests.servers.s3"]
