"""The de-assets command as a user meets it: plain errors, no tracebacks."""

import datetime as dt

import pytest
import sqlalchemy as sa

from de_assets.cli import main
from de_assets.generation.ledger import ledger_days


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DE_ASSETS_HOME", str(tmp_path))
    for name in ("DE_ASSETS_START_DATE", "DE_ASSETS_HOT_URL", "DE_ASSETS_SOURCE_DB_URL", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _count(url, table):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


def test_simulate_defaults_to_days_ending_yesterday(home, capsys):
    assert main(["simulate", "--days", "2", "--orders-per-day", "200", "--events-per-day", "500"]) == 0
    today = dt.datetime.now(dt.UTC).date()
    assert ledger_days(home / "ledger") == [today - dt.timedelta(days=2), today - dt.timedelta(days=1)]
    assert _count(f"sqlite:///{home}/source/shop.sqlite", "orders") <= 400
    assert "200 orders" in capsys.readouterr().out


def test_run_executes_the_main_job_with_a_persistent_instance(home, capsys):
    assert main(["run", "--days", "1", "--orders-per-day", "100", "--events-per-day", "300"]) == 0
    assert "succeeded" in capsys.readouterr().out
    assert (home / "dagster_home" / "dagster.yaml").exists()
    assert any((home / "dagster_home" / "history" / "runs").glob("*.db"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--start", "2999-01-01", "--days", "1"], "is not over yet"),
        (["simulate", "--days", "0"], "--days must be at least 1"),
        (["run", "--start", "2001-01-01", "--days", "1"], "before the first partition"),
    ],
)
def test_bad_requests_get_one_clear_line(home, capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_bad_environment_names_the_variable(home, capsys, monkeypatch):
    monkeypatch.setenv("DE_ASSETS_HOT_URL", "postgres-ish://me:pw@x")
    assert main(["simulate", "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert "DE_ASSETS_HOT_URL" in err
    assert "pw@" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--start", "yesterday"], "expected a date as YYYY-MM-DD"),
        (["simulate", "--defect-scale", "-1"], "expected a number >= 0"),
        (["simulate", "--defect-scale", "nan"], "expected a number >= 0"),
        (["run", "--orders-per-day", "x"], "expected a whole number"),
    ],
)
def test_bad_argument_is_refused_by_the_parser(home, capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_a_failing_run_says_which_step_failed_and_why(home, capsys, monkeypatch):
    # An unwritable landing folder: the clickstream step fails, the command reports it and exits 1.
    blocker = home / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("DE_ASSETS_LANDING_DIR", str(blocker))
    assert main(["run", "--days", "1", "--orders-per-day", "50", "--events-per-day", "100"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out
    assert "clickstream_landing" in captured.err
    assert "failed:" in captured.err


def test_replay_rebuilds_transformation_from_the_raw_zone_without_touching_the_sources(home, capsys):
    assert main(["run", "--days", "2", "--orders-per-day", "100", "--events-per-day", "300"]) == 0
    capsys.readouterr()
    sources = {p: p.read_bytes() for p in [home / "source" / "shop.sqlite", *(home / "landing").iterdir()]}
    ledger = sorted(p.name for p in (home / "ledger").rglob("*"))
    assert main(["replay", "--days", "2"]) == 0
    out = capsys.readouterr().out
    assert "replay_job over" in out
    assert "succeeded" in out
    assert "transformation/events" in out
    assert "generation/" not in out
    assert "ingestion/" not in out
    assert {p: p.read_bytes() for p in sources} == sources
    assert sorted(p.name for p in (home / "ledger").rglob("*")) == ledger


def test_replay_before_anything_was_ingested_builds_empty_partitions(home, capsys):
    assert main(["replay", "--days", "2"]) == 0
    assert "replay_job over" in capsys.readouterr().out
