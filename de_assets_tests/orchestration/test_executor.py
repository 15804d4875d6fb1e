"""The executor is chosen by the profile; Celery's URLs are checked, never shown."""

import pytest

from de_assets.cli import main
from de_assets.definitions import MAIN_JOB, build_definitions
from de_assets.orchestration.executor import CELERY_BACKEND_URL, CELERY_BROKER_URL
from de_assets.settings import PII_KEY, PRODUCTION, PROFILE, SettingsError, load_settings
from de_assets_tests.production_env import PRODUCTION_STORES


@pytest.fixture
def production(tmp_path):
    return {"DE_ASSETS_HOME": str(tmp_path), PROFILE: PRODUCTION, PII_KEY: "k" * 64, **PRODUCTION_STORES}


def _executor_name(env):
    return build_definitions(load_settings(env)).resolve_job_def(MAIN_JOB).executor_def.name


def test_the_embedded_profile_runs_steps_in_process_even_with_a_broker_set(tmp_path):
    env = {"DE_ASSETS_HOME": str(tmp_path), CELERY_BROKER_URL: "redis://127.0.0.1:6379/0"}
    assert load_settings(env).celery is None
    assert _executor_name(env) == "in_process"


def test_the_production_profile_runs_steps_on_celery_with_the_backend_defaulting_to_the_broker(production):
    env = {**production, CELERY_BROKER_URL: "redis://:pw@redis.internal:6379/0"}
    celery = load_settings(env).celery
    assert (celery.broker.variable, celery.backend.variable) == (CELERY_BROKER_URL, CELERY_BROKER_URL)
    assert "pw" not in repr(celery)
    assert _executor_name(env) == "celery"
    separate = load_settings({**env, CELERY_BACKEND_URL: "redis://:pw@results.internal:6379/1"}).celery
    assert separate.backend.variable == CELERY_BACKEND_URL


def test_the_production_profile_needs_a_broker_to_build_its_jobs_but_not_for_its_commands(production):
    settings = load_settings(production)  # `de-assets forget` and friends need no broker
    with pytest.raises(SettingsError, match=CELERY_BROKER_URL):
        build_definitions(settings)


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        (CELERY_BROKER_URL, "http://user:secretpw@redis.internal:6379/0"),
        (CELERY_BROKER_URL, "redis.internal:6379"),
        (CELERY_BACKEND_URL, "postgresql://user:secretpw@db/results"),
    ],
)
def test_a_bad_celery_url_names_the_variable_without_its_password(production, variable, url):
    env = {**production, CELERY_BROKER_URL: "redis://127.0.0.1:6379/0", variable: url}
    with pytest.raises(SettingsError, match=variable) as raised:
        load_settings(env)
    assert "secretpw" not in str(raised.value)


@pytest.mark.parametrize(
    ("profile", "message"),
    [("embedded", "set DE_ASSETS_PROFILE=production"), (PRODUCTION, CELERY_BROKER_URL)],
)
def test_a_worker_refuses_to_start_without_the_production_settings(
    production, monkeypatch, capsys, profile, message
):
    for name, value in {**production, PROFILE: profile}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(CELERY_BROKER_URL, raising=False)
    assert main(["worker", "--name", "w"]) == 2
    assert message in capsys.readouterr().err
