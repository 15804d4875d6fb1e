"""The one place environment variables become settings and resources.

Nothing here runs at import. :func:`load_settings` is called once when the Definitions are built
(the partitions' start date shapes the graph) and by the CLI. Resources receive an
:class:`dagster.EnvVar` for every variable that is set, so secrets such as database passwords are
resolved at run time and never shown in the Dagster UI; unset variables get the embedded default
under ``DE_ASSETS_HOME``.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import fsspec
import sqlalchemy as sa

from de_assets.security.redaction import redact_sqlalchemy_url, redact_url

if TYPE_CHECKING:
    from de_assets.orchestration.executor import CelerySettings

HOME = "DE_ASSETS_HOME"
PROFILE = "DE_ASSETS_PROFILE"
EMBEDDED, PRODUCTION = "embedded", "production"
SOURCE_DB_URL = "DE_ASSETS_SOURCE_DB_URL"
LANDING_DIR = "DE_ASSETS_LANDING_DIR"
HOT_URL = "DE_ASSETS_HOT_URL"
COLD_URL = "DE_ASSETS_COLD_URL"
LEDGER_DIR = "DE_ASSETS_LEDGER_DIR"
START_DATE = "DE_ASSETS_START_DATE"
PII_KEY = "DE_ASSETS_PII_KEY"
LATE_DAYS = "DE_ASSETS_LATE_DAYS"
ORDER_LOOKAHEAD_DAYS = "DE_ASSETS_ORDER_LOOKAHEAD_DAYS"
CUSTOMER_LOOKAHEAD_DAYS = "DE_ASSETS_CUSTOMER_LOOKAHEAD_DAYS"
CONTRACT_THRESHOLD = "DE_ASSETS_CONTRACT_THRESHOLD"
SENSOR_INTERVAL = "DE_ASSETS_SENSOR_INTERVAL_SECONDS"
SOURCE_SCAN_DAYS = "DE_ASSETS_SOURCE_SCAN_DAYS"
ALERT_WEBHOOK_URL = "DE_ASSETS_ALERT_WEBHOOK_URL"
SEGMENTS_DB_URL = "DE_ASSETS_SEGMENTS_DB_URL"
REPORTS_DIR = "DE_ASSETS_REPORTS_DIR"
HOT_DAYS = "DE_ASSETS_HOT_DAYS"
RAW_RETENTION_DAYS = "DE_ASSETS_RAW_RETENTION_DAYS"
# Read by Dagster itself, from deploy/dagster.yaml (the production instance); validated here.
INSTANCE_DB_URL = "DE_ASSETS_INSTANCE_DB_URL"
# The production profile names every store: a default under one machine's home would split the data
# between machines.
PRODUCTION_REQUIRED = (SOURCE_DB_URL, LANDING_DIR, HOT_URL, COLD_URL, INSTANCE_DB_URL)
# Files that one process locks: fine on one machine, never shared by a cluster's workers.
_EMBEDDED_BACKENDS = ("duckdb", "sqlite")

DEFAULT_HOME = "./.de_assets"
DEFAULT_HISTORY_DAYS = 90
# Events may arrive this many days after they happened; later ones are rejected as too late.
DEFAULT_LATE_DAYS = 3
# Source rows change for this long after creation (the simulator's orders live 10 days, customers
# 30); a transformation partition reads that many later capture windows to see a row's latest state.
DEFAULT_ORDER_LOOKAHEAD_DAYS = 14
DEFAULT_CUSTOMER_LOOKAHEAD_DAYS = 31
# A delivery whose rejected share passes this breaks its contract (ERROR check, partition blocked).
DEFAULT_CONTRACT_THRESHOLD = 0.05
# Hot-tier partitions older than this many days move to the cold tier (maintenance job).
DEFAULT_HOT_DAYS = 7
# Raw-zone partitions older than this are deleted (maintenance job). It must stay longer than every
# look-ahead, or the current partitions could no longer be rebuilt from the raw zone.
DEFAULT_RAW_RETENTION_DAYS = 90
# How often the sensors look for new data (seconds between ticks).
DEFAULT_SENSOR_INTERVAL_SECONDS = 30
# How many recent capture windows the source sensor fingerprints each tick (it reads their rows: at a
# million orders a day, each window costs about a second on SQLite).
DEFAULT_SOURCE_SCAN_DAYS = 3


class SettingsError(ValueError):
    """A setting with a bad value: the message names the variable and what it expected."""


@dataclass(frozen=True)
class Setting:
    """One resolved setting: its value, and whether it came from the environment."""

    variable: str
    value: str
    from_env: bool

    def config(self) -> str | dg.EnvVar:
        """Resource config: the variable itself when set (resolved at run time), else the default."""
        return dg.EnvVar(self.variable) if self.from_env else self.value


@dataclass(frozen=True)
class Settings:
    home: Path
    # "embedded" (everything in the home, generated key allowed) or "production" (no silent defaults).
    profile: str
    source_db_url: Setting
    landing_dir: Setting
    hot_url: Setting
    cold_url: Setting
    ledger_dir: Setting
    start_date: dt.date
    # The pseudonymisation key: from the environment (as EnvVar), else a key file in the home.
    pii_key: Setting
    pii_key_file: Path
    # These shape the graph (partition mappings) or the contracts, so they are plain values.
    late_days: int
    order_lookahead_days: int
    customer_lookahead_days: int
    contract_threshold: float
    # Orchestration: the sensors' tick interval (shapes the sensor definitions), the alert log and
    # the optional webhook (a secret: its URL may carry a token, so it reaches resources as EnvVar).
    sensor_interval_seconds: int
    source_scan_days: int
    alerts_file: Path
    alert_webhook_url: Setting
    # Serving: where reverse ETL writes (its own connection; by default the shop database's URL, in
    # production a role granted only the segment tables) and where report images go.
    segments_db_url: Setting
    reports_dir: Setting
    # Data lifecycle: when hot partitions move to the cold tier, when raw partitions are deleted.
    hot_days: int
    raw_retention_days: int
    # Production: the Celery broker and backend that run the steps (de_assets/orchestration/executor.py).
    celery: CelerySettings | None


def _sqlalchemy_url(variable: str, value: str) -> str:
    try:
        url = sa.make_url(value)
        url.get_dialect()
    except Exception as error:
        raise SettingsError(
            f"{variable} must be a SQLAlchemy database URL whose driver is installed, such as "
            f"'duckdb:////abs/path/hot.duckdb', 'sqlite:////abs/path/shop.sqlite' or "
            f"'postgresql+psycopg://user:***@host/db'; got {redact_sqlalchemy_url(value)!r} ({type(error).__name__}: "
            f"{redact_sqlalchemy_url(str(error)) if '://' in str(error) else error})"
        ) from None
    return value


def _storage_url(variable: str, value: str) -> str:
    if not value.strip():
        raise SettingsError(
            f"{variable} must be a folder path or an fsspec URL (e.g. s3://bucket/prefix); got ''"
        )
    protocol = fsspec.utils.get_protocol(value)
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as error:
        raise SettingsError(
            f"{variable} must be a folder path or an fsspec URL with an installed filesystem "
            f"(file, s3 with s3fs, ...); got {redact_url(value)!r}: {error}"
        ) from None
    return value


def _local_folder(variable: str, value: str) -> str:
    if fsspec.utils.get_protocol(value) not in ("file", "local"):
        raise SettingsError(f"{variable} must be a local folder path; got {redact_url(value)!r}")
    return value


def _start_date(value: str | None, today: dt.date) -> dt.date:
    if value is None:
        return today - dt.timedelta(days=DEFAULT_HISTORY_DAYS)
    try:
        start = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise SettingsError(f"{START_DATE} must be a date as YYYY-MM-DD (UTC); got {value!r}") from None
    if start >= today:
        raise SettingsError(
            f"{START_DATE} must be before today ({today.isoformat()} UTC) so that at least one complete "
            f"daily partition exists; got {start.isoformat()}"
        )
    return start


def _whole(env: Mapping[str, str], variable: str, default: int, least: int, most: int, unit: str = "") -> int:
    raw = env.get(variable)
    if not raw:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = least - 1
    if not least <= value <= most:
        raise SettingsError(f"{variable} must be a whole number{unit} from {least} to {most}; got {raw!r}")
    return value


def _days(env: Mapping[str, str], variable: str, default: int, most: int) -> int:
    return _whole(env, variable, default, 0, most, " of days")


def _retention(env: Mapping[str, str], lookahead: int) -> int:
    """Raw retention: longer than every look-ahead (and the features' windows over raw captures)."""
    least = max(lookahead, 7) + 1
    return _whole(env, RAW_RETENTION_DAYS, max(DEFAULT_RAW_RETENTION_DAYS, least), least, 36_600, " of days")


def _webhook(env: Mapping[str, str]) -> Setting:
    raw = env.get(ALERT_WEBHOOK_URL, "")
    if raw and fsspec.utils.get_protocol(raw) not in ("http", "https"):
        raise SettingsError(f"{ALERT_WEBHOOK_URL} must be an http(s) URL; got {redact_url(raw)!r}")
    return Setting(ALERT_WEBHOOK_URL, "", from_env=bool(raw))


def _share(env: Mapping[str, str], variable: str, default: float) -> float:
    raw = env.get(variable)
    if not raw:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise SettingsError(f"{variable} must be a fraction from 0 to 1 (e.g. 0.05); got {raw!r}")
    return value


def _check_production(env: Mapping[str, str]) -> None:
    missing = [variable for variable in PRODUCTION_REQUIRED if not env.get(variable)]
    if missing:
        raise SettingsError(
            f"the production profile needs {', '.join(missing)} (README, 'Production'): it never falls "
            "back to files under one machine's DE_ASSETS_HOME"
        )
    for variable in (SOURCE_DB_URL, HOT_URL):
        backend = sa.make_url(_sqlalchemy_url(variable, env[variable])).get_backend_name()
        if backend in _EMBEDDED_BACKENDS:
            raise SettingsError(
                f"{variable} is an embedded {backend} file, which one process locks and no other machine "
                "reaches: the production profile needs a database server (postgresql+psycopg://...)"
            )
    needed = ["dagster_postgres", "dagster_celery"]
    if sa.make_url(env[HOT_URL]).get_backend_name() == "postgresql":
        needed.append("adbc_driver_postgresql")  # the hot tier's bulk path
    missing_packages = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing_packages:
        raise SettingsError(
            f"the production profile needs {', '.join(missing_packages)}: install the production extra "
            "(pip install 'de_assets[production]', or -e '.[production]' in a checkout)"
        )
    instance = sa.make_url(_sqlalchemy_url(INSTANCE_DB_URL, env[INSTANCE_DB_URL]))
    if instance.drivername != "postgresql+psycopg2":
        raise SettingsError(
            f"{INSTANCE_DB_URL} must be a postgresql+psycopg2:// URL (dagster-postgres is written for "
            f"psycopg2); got {redact_sqlalchemy_url(env[INSTANCE_DB_URL])!r}"
        )


def load_settings(env: Mapping[str, str] | None = None, today: dt.date | None = None) -> Settings:
    """Read and validate every setting; raises :class:`SettingsError` naming the variable at fault."""
    # Imported here: the executor module builds on this one.
    from de_assets.orchestration.executor import load_celery_settings

    env = os.environ if env is None else env
    today = today or dt.datetime.now(dt.UTC).date()
    home = Path(env.get(HOME) or DEFAULT_HOME).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise SettingsError(f"{HOME} must be a folder; {home} is a file")

    def setting(variable: str, default: str, check: Callable[[str, str], str]) -> Setting:
        raw = env.get(variable)
        value = raw if raw else default
        check(variable, value)
        return Setting(variable, value, from_env=bool(raw))

    profile = (env.get(PROFILE) or EMBEDDED).strip().lower()
    if profile not in (EMBEDDED, PRODUCTION):
        raise SettingsError(f"{PROFILE} must be {EMBEDDED!r} or {PRODUCTION!r}; got {env.get(PROFILE)!r}")
    if profile == PRODUCTION and not env.get(PII_KEY):
        # A generated key file on one machine would make tokens no other machine can reproduce.
        raise SettingsError(
            f"the production profile needs {PII_KEY} (a secret of at least 32 characters, e.g. 64 hex "
            "characters); it never generates a key file"
        )
    if profile == PRODUCTION:
        _check_production(env)
    lookahead = max(
        _days(env, LATE_DAYS, DEFAULT_LATE_DAYS, 60),
        _days(env, ORDER_LOOKAHEAD_DAYS, DEFAULT_ORDER_LOOKAHEAD_DAYS, 366),
        _days(env, CUSTOMER_LOOKAHEAD_DAYS, DEFAULT_CUSTOMER_LOOKAHEAD_DAYS, 366),
    )
    source_db_url = setting(SOURCE_DB_URL, f"sqlite:///{home / 'source' / 'shop.sqlite'}", _sqlalchemy_url)
    return Settings(
        home=home,
        profile=profile,
        source_db_url=source_db_url,
        landing_dir=setting(LANDING_DIR, str(home / "landing"), _storage_url),
        hot_url=setting(HOT_URL, f"duckdb:///{home / 'hot' / 'warehouse.duckdb'}", _sqlalchemy_url),
        cold_url=setting(COLD_URL, str(home / "cold"), _storage_url),
        ledger_dir=setting(LEDGER_DIR, str(home / "ledger"), _local_folder),
        start_date=_start_date(env.get(START_DATE), today),
        # Never echoed: the value is only ever passed on as EnvVar(DE_ASSETS_PII_KEY).
        pii_key=Setting(PII_KEY, "", from_env=bool(env.get(PII_KEY))),
        pii_key_file=home / "secrets" / "pii.key",
        late_days=_days(env, LATE_DAYS, DEFAULT_LATE_DAYS, 60),
        order_lookahead_days=_days(env, ORDER_LOOKAHEAD_DAYS, DEFAULT_ORDER_LOOKAHEAD_DAYS, 366),
        customer_lookahead_days=_days(env, CUSTOMER_LOOKAHEAD_DAYS, DEFAULT_CUSTOMER_LOOKAHEAD_DAYS, 366),
        contract_threshold=_share(env, CONTRACT_THRESHOLD, DEFAULT_CONTRACT_THRESHOLD),
        sensor_interval_seconds=_whole(env, SENSOR_INTERVAL, DEFAULT_SENSOR_INTERVAL_SECONDS, 1, 86_400),
        source_scan_days=_whole(env, SOURCE_SCAN_DAYS, DEFAULT_SOURCE_SCAN_DAYS, 1, 366, " of days"),
        alerts_file=home / "alerts.jsonl",
        alert_webhook_url=_webhook(env),
        # Unset: the source's own setting, so a password in it still travels only as its EnvVar.
        segments_db_url=(
            setting(SEGMENTS_DB_URL, "", _sqlalchemy_url) if env.get(SEGMENTS_DB_URL) else source_db_url
        ),
        reports_dir=setting(REPORTS_DIR, str(home / "reports"), _local_folder),
        hot_days=_whole(env, HOT_DAYS, DEFAULT_HOT_DAYS, 1, 3660, " of days"),
        raw_retention_days=_retention(env, lookahead),
        celery=load_celery_settings(env) if profile == PRODUCTION else None,
    )


# Resource keys; assets name the tier they live in with ``io_manager_key=HOT`` or ``COLD``.
HOT = "hot"
COLD = "cold"


def build_resources(settings: Settings) -> dict[str, object]:
    """Every resource the Definitions bind, configured from the settings."""
    # Imported here so that reading settings (e.g. in the CLI) stays light.
    from de_assets.generation.resources import (
        DefectLedgerResource,
        LandingFolderResource,
        ShopDatabaseResource,
        SimulationResource,
    )
    from de_assets.orchestration.alerts import AlertWebhookResource
    from de_assets.security.resources import PiiKeyResource
    from de_assets.serving.resources import ReportsResource, SegmentsDatabaseResource, WarehouseResource
    from de_assets.storage.cold import ColdTierIOManager
    from de_assets.storage.hot import HotTierIOManager

    cold = ColdTierIOManager(root=settings.cold_url.config())
    return {
        HOT: HotTierIOManager(url=settings.hot_url.config(), cold_root=settings.cold_url.config()),
        COLD: cold,
        # Anything that forgets to pick a tier lands in cold Parquet, never in pickles.
        "io_manager": cold,
        "shop": ShopDatabaseResource(url=settings.source_db_url.config()),
        "landing": LandingFolderResource(root=settings.landing_dir.config()),
        "ledger": DefectLedgerResource(folder=settings.ledger_dir.config()),
        "simulation": SimulationResource(),
        "pii_key": PiiKeyResource(
            key=settings.pii_key.config(),
            key_file=str(settings.pii_key_file),
            registry_url=settings.hot_url.config(),
        ),
        "alert_webhook": AlertWebhookResource(url=settings.alert_webhook_url.config()),
        "warehouse": WarehouseResource(url=settings.hot_url.config(), cold_root=settings.cold_url.config()),
        "segments_db": SegmentsDatabaseResource(url=settings.segments_db_url.config()),
        "reports": ReportsResource(folder=settings.reports_dir.config()),
    }
