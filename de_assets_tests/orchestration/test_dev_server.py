"""`de-assets dev` really starts Dagster with the project's instance configuration.

Starts the real webserver, daemon and code server on loopback, asks GraphQL what it loaded, and
stops it with SIGINT, checking that no process is left behind.
"""

from .dev_server import dev_server


def test_dev_server_loads_the_project_and_its_pool_limits(tmp_path):
    with dev_server(tmp_path) as server:
        data = server.graphql(
            "{ assetNodes { assetKey { path } groupName } "
            "instance { poolConfig { defaultPoolLimit poolGranularity } runQueueConfig { maxConcurrentRuns } } }",
        )
    keys = {tuple(n["assetKey"]["path"]) for n in data["assetNodes"]}
    assert {("generation", "shop_database"), ("generation", "clickstream_landing")} <= keys
    assert data["instance"]["poolConfig"]["defaultPoolLimit"] == 1
    assert data["instance"]["runQueueConfig"]["maxConcurrentRuns"] == 4
    assert (tmp_path / "dagster_home" / "dagster.yaml").exists()
