import datetime as dt

import dagster as dg
import pytest

from de_assets import settings as s
from de_assets.settings import SettingsError, load_settings

TODAY = dt.date(2026, 11, 22)


def test_defaults_live_under_home(tmp_path):
    loaded = load_settings({s.HOME: str(tmp_path)}, today=TODAY)
    assert loaded.home == tmp_path.resolve()
    assert loaded.source_db_url.value == f"sqlite:///{tmp_path}/source/shop.sqlite"
    assert loaded.hot_url.value == f"duckdb:///{tmp_path}/hot/warehouse.duckdb"
    assert loaded.cold_url.value == str(tmp_path / "cold")
    assert loaded.landing_dir.value == str(tmp_path / "landing")
    assert loaded.start_date == TODAY - dt.timedelta(days=s.DEFAULT_HISTORY_DAYS)
    # Defaults are plain values; nothing comes from the environment.
    assert loaded.hot_url.config() == loaded.hot_url.value


def test_set_variables_reach_resources_as_env_vars(tmp_path):
    url = "sqlite:////tmp/elsewhere.sqlite"
    loaded = load_settings({s.HOME: str(tmp_path), s.HOT_URL: url, s.START_DATE: "2026-01-01"}, today=TODAY)
    assert loaded.hot_url.value == url
    assert loaded.hot_url.config() == dg.EnvVar(s.HOT_URL)
    assert loaded.start_date == dt.date(2026, 1, 1)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (s.HOT_URL, "nonsense", "DE_ASSETS_HOT_URL must be a SQLAlchemy database URL"),
        (s.SOURCE_DB_URL, "nosuchdialect://x/y", "DE_ASSETS_SOURCE_DB_URL must be a SQLAlchemy"),
        (s.COLD_URL, "nosuchproto://bucket/x", "DE_ASSETS_COLD_URL must be a folder path or an fsspec URL"),
        (s.LEDGER_DIR, "memory://x", "DE_ASSETS_LEDGER_DIR must be a local folder"),
        (s.START_DATE, "03/01/2026", "DE_ASSETS_START_DATE must be a date as YYYY-MM-DD"),
        (s.START_DATE, "2026-11-22", "DE_ASSETS_START_DATE must be before today"),
    ],
)
def test_bad_values_fail_fast_naming_the_variable(tmp_path, variable, value, expected):
    with pytest.raises(SettingsError, match=expected):
        load_settings({s.HOME: str(tmp_path), variable: value}, today=TODAY)


def test_errors_never_show_a_password(tmp_path):
    with pytest.raises(SettingsError) as caught:
        load_settings({s.HOME: str(tmp_path), s.HOT_URL: "nosuchdialect://admin:hunter2@db/x"}, today=TODAY)
    assert "hunter2" not in str(caught.value)


def test_home_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "home"
    file.write_text("")
    with pytest.raises(SettingsError, match="DE_ASSETS_HOME must be a folder"):
        load_settings({s.HOME: str(file)}, today=TODAY)


def test_orchestration_settings_default_and_refuse_bad_values(tmp_path):
    from de_assets.settings import ALERT_WEBHOOK_URL, HOME, SENSOR_INTERVAL

    settings = load_settings({HOME: str(tmp_path)}, today=dt.date(2026, 11, 22))
    assert settings.sensor_interval_seconds == 30
    assert settings.alerts_file == tmp_path / "alerts.jsonl"
    assert not settings.alert_webhook_url.from_env
    hook = load_settings({HOME: str(tmp_path), ALERT_WEBHOOK_URL: "https://hooks.example/T0K3N"})
    assert hook.alert_webhook_url.from_env
    assert "T0K3N" not in repr(hook.alert_webhook_url)  # reaches resources as EnvVar only
    for variable, value in ((SENSOR_INTERVAL, "0"), (SENSOR_INTERVAL, "x"), (ALERT_WEBHOOK_URL, "ftp://h/x")):
        with pytest.raises(SettingsError, match=variable):
            load_settings({HOME: str(tmp_path), variable: value})


def test_the_production_profile_refuses_to_start_without_a_pseudonymisation_key(tmp_path):
    from de_assets.settings import PRODUCTION, PROFILE
    from de_assets_tests.production_env import PRODUCTION_STORES

    base = {"DE_ASSETS_HOME": str(tmp_path), PROFILE: PRODUCTION}
    with pytest.raises(SettingsError, match="production profile needs DE_ASSETS_PII_KEY"):
        load_settings(base)
    stores = PRODUCTION_STORES
    keyed = {**base, "DE_ASSETS_PII_KEY": "k" * 64}
    with pytest.raises(
        SettingsError, match=r"needs DE_ASSETS_SOURCE_DB_URL, DE_ASSETS_LANDING_DIR, .*INSTANCE_DB_URL"
    ):
        load_settings(keyed)
    assert load_settings({**keyed, **stores}).profile == PRODUCTION
    embedded_hot = {**keyed, **stores, "DE_ASSETS_HOT_URL": f"duckdb:///{tmp_path}/hot.duckdb"}
    with pytest.raises(SettingsError, match="DE_ASSETS_HOT_URL is an embedded duckdb file"):
        load_settings(embedded_hot)
    wrong_driver = {
        **keyed,
        **stores,
        "DE_ASSETS_INSTANCE_DB_URL": "postgresql+psycopg://d:s3cret@db/dagster",
    }
    with pytest.raises(SettingsError, match="psycopg2") as refused:
        load_settings(wrong_driver)
    assert "s3cret" not in str(refused.value)
    assert load_settings({"DE_ASSETS_HOME": str(tmp_path)}).profile == "embedded"
    with pytest.raises(SettingsError, match="DE_ASSETS_PROFILE must be"):
        load_settings({**base, PROFILE: "staging"})


def test_the_production_profile_names_the_extra_when_its_packages_are_missing(tmp_path, monkeypatch):
    import importlib.util

    from de_assets_tests.production_env import PRODUCTION_STORES

    real_find_spec = importlib.util.find_spec
    # As on a machine where only `pip install de_assets` ran: the production packages are absent.
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "adbc_driver_postgresql" else real_find_spec(name, *a),
    )
    env = {"DE_ASSETS_HOME": str(tmp_path), "DE_ASSETS_PROFILE": "production", "DE_ASSETS_PII_KEY": "k" * 64}
    with pytest.raises(SettingsError, match=r"needs adbc_driver_postgresql: install the production extra"):
        load_settings({**env, **PRODUCTION_STORES})
