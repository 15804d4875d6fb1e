"""The instance configuration (pool limits) is the one Dagster actually loads."""

import dagster as dg
import pytest
import yaml

from de_assets.orchestration.instance import instance_config_text, prepare_dagster_home


def test_prepared_home_limits_every_pool_to_one(tmp_path):
    target = prepare_dagster_home(tmp_path, environ={})
    assert target == tmp_path / "dagster_home"
    with dg.DagsterInstance.from_config(str(target)) as instance:
        config = instance.get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
    assert config.run_queue_config.max_concurrent_runs == 4
    assert yaml.safe_load(instance_config_text())["telemetry"] == {"enabled": False}


def test_an_existing_dagster_home_is_respected_and_warned_about(tmp_path):
    home = tmp_path / "mine"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with pytest.warns(UserWarning, match="sets no concurrency.pools.default_limit"):
        assert prepare_dagster_home(tmp_path, environ={"DAGSTER_HOME": str(home)}) == home
    assert "pools" not in (home / "dagster.yaml").read_text()


def test_repository_dagster_yaml_is_the_packaged_one():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert (root / "dagster.yaml").read_text() == instance_config_text()
