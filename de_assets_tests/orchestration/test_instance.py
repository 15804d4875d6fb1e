"""The instance configuration (pool limits) is the one Dagster actually loads."""

import dagster as dg
import pytest
import sqlalchemy as sa
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


def test_production_instance_keeps_runs_and_events_in_postgresql(tmp_path, postgres_server, monkeypatch):
    url = postgres_server.create_database("dagster")
    # dagster-postgres speaks psycopg2 (its NOTIFY does not work with psycopg 3, SQLAlchemy 2.1's default).
    monkeypatch.setenv("DE_ASSETS_INSTANCE_DB_URL", url.replace("+psycopg://", "+psycopg2://"))
    target = prepare_dagster_home(tmp_path, environ={}, production=True)
    assert (target / "dagster.yaml").read_text() == instance_config_text(production=True)
    # The file names the variable; the URL (and its password) only ever lives in the environment.
    storage = yaml.safe_load((target / "dagster.yaml").read_text())["storage"]
    assert storage == {"postgres": {"postgres_url": {"env": "DE_ASSETS_INSTANCE_DB_URL"}}}

    @dg.asset
    def answer() -> int:
        return 42

    with dg.DagsterInstance.from_config(str(target)) as instance:
        result = dg.materialize([answer], instance=instance)
        assert result.success
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 4
        # A run that lost a Celery worker mid-step is not awaited forever.
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT run_id, status FROM runs").all()
        events = conn.exec_driver_sql(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
        ).scalar_one()
    engine.dispose()
    assert runs == [(result.run_id, "SUCCESS")]
    assert events == 1
    # Nothing of the run went to a SQLite file in the home.
    assert not list(target.rglob("*.db"))


def test_repository_production_dagster_yaml_is_the_packaged_one():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    assert (root / "deploy" / "dagster.yaml").read_text() == instance_config_text(production=True)
