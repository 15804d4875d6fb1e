"""Pandera models of every table the pipeline writes: what each column holds and what must be true of it.

The models check what we produce (``coerce=False``): a wrong dtype is a bug to report, not to paper
over. Raw models are not strict (a source may add a column, which the raw zone keeps as it came);
transformation outputs are. Each column's ``description`` is published as its documentation in the
Dagster catalog (:func:`de_assets.quality.checks.column_schema`), and ``Config.metadata`` lists the
columns whose values must never reach logs or check metadata (:func:`pii_columns`).

Dtypes are those of pandas 3: text is ``str``, timestamps are ``datetime64[us, UTC]`` (naive ones
``datetime64[us]``, any unit accepted), nullable integers ``Int64``. Pandera treats ``int64`` and
``Int64`` as the same type, so an integer column accepts either.
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
from pandera import extensions
from pandera.typing import Series

from de_assets.serving.segments import SEGMENTS
from de_assets.transformation.event_contract import EVENT_TYPES
from de_assets.transformation.quarantine import Reason

UtcTimestamp = Annotated[pd.DatetimeTZDtype, "us", "UTC"]
"""``datetime64[us, UTC]`` exactly: another unit or a zone spelled ``Etc/UTC`` is refused."""
NaiveTimestamp = pd.Timestamp
"""A naive ``datetime64`` of any unit (pandera does not tell units of naive timestamps apart)."""
NullableInt = pd.Int64Dtype

PII = "pii_columns"
"""``Config.metadata`` key: columns whose values are masked wherever they could be shown."""

DAY_PATTERN = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
HEX64_PATTERN = r"[0-9a-f]{64}"
HEX16_PATTERN = r"[0-9a-f]{16}"
COUNTRY_PATTERN = r"[A-Z]{2}"
CURRENCY_PATTERN = r"[A-Z]{3}"

CDC_OPS = ("upsert", "delete")
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled")
REASONS = tuple(reason.value for reason in Reason)


def str_fullmatch(values: pd.Series, *, pattern: str) -> pd.Series:
    """The whole text matches ``pattern``: ``str_matches`` would let "2024-01-01\\n" through."""
    return values.str.fullmatch(pattern)


# Registration is global and refuses a second one with the same name (e.g. after a module reload).
if not hasattr(pa.Check, str_fullmatch.__name__):
    extensions.register_check_method(statistics=["pattern"])(str_fullmatch)


def pii(*columns: str) -> dict[str, tuple[str, ...]]:
    """``Config.metadata`` of a model whose ``columns`` hold PII (none given: the model holds none)."""
    return {PII: columns}


def pii_columns(model: type[pa.DataFrameModel]) -> frozenset[str]:
    """The columns of ``model`` whose values must be masked in anything shown to people."""
    metadata = model.Config.metadata or {}  # to_schema() drops the model's Config.metadata
    return frozenset(metadata.get(PII, ()))


# --- ingestion: the raw zone, as captured --------------------------------------------------------


class _RawCapture(pa.DataFrameModel):
    """Columns of one captured version of a source row (change data capture from the shop database)."""

    created_at: Series[NaiveTimestamp] = pa.Field(
        nullable=True,
        description="When the source row was created (source clock, naive); a delete carries its row's "
        "value, so the delete can be placed in the row's creation day. Null only when the source lost it.",
    )
    updated_at: Series[NaiveTimestamp] = pa.Field(
        nullable=True,
        description="When the source row was last changed (source clock, naive); orders versions by it. "
        "Null only on a delete.",
    )
    op: Series[str] = pa.Field(
        isin=CDC_OPS, description="`upsert`: the row as it was; `delete`: a tombstone, the row was gone."
    )
    captured_at: Series[UtcTimestamp] = pa.Field(description="When the capture read the source (UTC).")
    window_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN,
        description="The capture window (YYYY-MM-DD) this version was read in: the raw partition.",
    )

    @pa.dataframe_check(error="upsert rows need updated_at")
    def upsert_has_updated_at(cls, frame: pd.DataFrame) -> pd.Series:
        """A version without ``updated_at`` cannot be ordered against the others; only tombstones lack it."""
        return (frame["op"] != "upsert") | frame["updated_at"].notna()


class RawOrdersModel(_RawCapture):
    """Captured versions of shop orders (`ingestion/raw_orders`)."""

    order_id: Series[int] = pa.Field(description="Source key of the order.")
    customer_id: Series[NullableInt] = pa.Field(
        nullable=True,
        description="Ordering customer's source key; null on a delete or when the source lost it.",
    )
    status: Series[str] = pa.Field(nullable=True, description="Order status as the source had it.")
    amount: Series[float] = pa.Field(
        nullable=True, description="Order amount in `currency` as the source had it (may be invalid)."
    )
    currency: Series[str] = pa.Field(
        nullable=True, description="Currency code as the source had it (may be invalid)."
    )

    class Config:
        description = "Captured versions of shop orders, as they came."
        strict = False
        coerce = False
        metadata = pii()


class RawCustomersModel(_RawCapture):
    """Captured versions of shop customers (`ingestion/raw_customers`); holds PII as it came."""

    customer_id: Series[int] = pa.Field(description="Source key of the customer.")
    full_name: Series[str] = pa.Field(nullable=True, description="Customer's full name (PII).")
    email: Series[str] = pa.Field(nullable=True, description="Customer's e-mail address (PII).")
    country: Series[str] = pa.Field(nullable=True, description="Country code as the source had it.")

    class Config:
        description = "Captured versions of shop customers, as they came (PII)."
        strict = False
        coerce = False
        metadata = pii("full_name", "email")


class RawEventsModel(pa.DataFrameModel):
    """Every clickstream line delivered (`ingestion/raw_events`), parsed or not."""

    delivery_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN,
        description="Day in the delivering file's name (YYYY-MM-DD): the partition.",
    )
    source_file: Series[str] = pa.Field(description="Landing file the line came in.")
    line_number: Series[int] = pa.Field(ge=1, description="1-based line number in `source_file`.")
    file_sha256: Series[str] = pa.Field(
        str_fullmatch=HEX64_PATTERN, description="SHA-256 of the whole file (lower-case hex): its identity."
    )
    ingested_at: Series[UtcTimestamp] = pa.Field(
        description="When the file first arrived (UTC); a re-run keeps the first arrival."
    )
    payload: Series[str] = pa.Field(description="The line as delivered (PII: may hold anything).")
    parse_error: Series[str] = pa.Field(
        nullable=True,
        isin=REASONS,
        description="Why the line could not be parsed (a quarantine reason); null if parsed.",
    )
    parse_detail: Series[str] = pa.Field(
        nullable=True,
        description="Specifics of the parse error; treated as PII because a parser message may echo the line.",
    )

    class Config:
        description = "Every clickstream line delivered, as it came (PII)."
        strict = False
        coerce = False
        unique = ("source_file", "line_number")
        metadata = pii("payload", "parse_detail")


# --- transformation: clean, typed, deduplicated --------------------------------------------------


class _CurrentVersion(pa.DataFrameModel):
    """Columns of a table holding the current version of each source row."""

    created_at: Series[UtcTimestamp] = pa.Field(description="When the source row was created (UTC).")
    updated_at: Series[UtcTimestamp] = pa.Field(description="When the current version was written (UTC).")
    versions_seen: Series[int] = pa.Field(
        ge=1, description="Captured versions of this row read so far (duplicates included)."
    )
    captured_at: Series[UtcTimestamp] = pa.Field(description="When the current version was captured (UTC).")
    processed_at: Series[UtcTimestamp] = pa.Field(description="When this row was written here (UTC).")

    @pa.dataframe_check(error="updated_at before created_at")
    def updated_after_created(cls, frame: pd.DataFrame) -> pd.Series:
        """A version cannot predate its row; such rows are quarantined, never published."""
        return frame["updated_at"] >= frame["created_at"]


class OrdersModel(_CurrentVersion):
    """Current version of each valid order (`transformation/orders`)."""

    order_id: Series[int] = pa.Field(unique=True, description="Source key of the order.")
    customer_id: Series[NullableInt] = pa.Field(description="Ordering customer's source key.")
    status: Series[str] = pa.Field(isin=ORDER_STATUSES, description="Order status.")
    amount: Series[float] = pa.Field(ge=0, description="Order amount in `currency`.")
    currency: Series[str] = pa.Field(
        str_fullmatch=CURRENCY_PATTERN, description="ISO 4217 currency code of `amount`."
    )
    fx_rate_to_eur: Series[float] = pa.Field(gt=0, description="EUR per unit of `currency` used.")
    amount_eur: Series[float] = pa.Field(ge=0, description="`amount` converted to EUR.")

    class Config:
        description = "Current version of each valid order."
        strict = True
        coerce = False
        metadata = pii()


class CustomersModel(_CurrentVersion):
    """Current version of each customer, pseudonymised (`transformation/customers`)."""

    customer_id: Series[int] = pa.Field(unique=True, description="Source key of the customer.")
    customer_token: Series[str] = pa.Field(
        str_fullmatch=HEX64_PATTERN, description="Keyed pseudonym of the customer (HMAC-SHA-256, hex)."
    )
    email_token: Series[str] = pa.Field(
        str_fullmatch=HEX64_PATTERN, description="Keyed pseudonym of the normalised e-mail address (hex)."
    )
    name_token: Series[str] = pa.Field(
        str_fullmatch=HEX64_PATTERN, description="Keyed pseudonym of the full name (hex)."
    )
    country: Series[str] = pa.Field(
        str_fullmatch=COUNTRY_PATTERN, description="ISO 3166-1 alpha-2 country code."
    )
    pii_key_fingerprint: Series[str] = pa.Field(
        str_fullmatch=HEX16_PATTERN,
        description="Fingerprint of the pseudonymisation key used (16 hex), so a key rotation is visible.",
    )

    class Config:
        description = "Current version of each customer, with pseudonyms instead of PII."
        strict = True
        coerce = False
        # Pseudonyms are still personal data, and a token that fails its check may be unhashed PII.
        metadata = pii("customer_token", "email_token", "name_token")


class EventsModel(pa.DataFrameModel):
    """Each valid clickstream event once (`transformation/events`)."""

    event_id: Series[str] = pa.Field(unique=True, description="Event id from the source.")
    event_time: Series[UtcTimestamp] = pa.Field(description="When the event happened (UTC): the partition.")
    event_type: Series[str] = pa.Field(isin=EVENT_TYPES, description="What the visitor did.")
    session_id: Series[str] = pa.Field(description="Source session id (a browser session).")
    customer_id: Series[NullableInt] = pa.Field(
        nullable=True, description="Signed-in customer's source key; null for anonymous visitors."
    )
    page: Series[str] = pa.Field(nullable=True, description="Page path the event happened on.")
    device: Series[str] = pa.Field(description="Device class (mobile, desktop, tablet).")
    amount: Series[float] = pa.Field(nullable=True, ge=0, description="Purchase amount in `currency`.")
    currency: Series[str] = pa.Field(
        nullable=True, str_fullmatch=CURRENCY_PATTERN, description="ISO 4217 currency code of `amount`."
    )
    amount_eur: Series[float] = pa.Field(nullable=True, ge=0, description="`amount` converted to EUR.")
    extra_fields: Series[str] = pa.Field(
        nullable=True,
        description="Fields outside the contract, as JSON (PII: unknown fields may hold anything).",
    )
    source_file: Series[str] = pa.Field(description="Landing file the event came in.")
    line_number: Series[int] = pa.Field(ge=1, description="1-based line number in `source_file`.")
    delivery_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN, description="Day the event was delivered (raw partition, YYYY-MM-DD)."
    )
    ingested_at: Series[UtcTimestamp] = pa.Field(description="When its file first arrived (UTC).")
    processed_at: Series[UtcTimestamp] = pa.Field(description="When this row was written here (UTC).")
    lateness_days: Series[int] = pa.Field(ge=0, description="Delivery day minus event day, in days.")

    @pa.dataframe_check(error="purchase without amount or currency")
    def purchase_has_amount(cls, frame: pd.DataFrame) -> pd.Series:
        """Revenue is summed from purchases: one without an amount would silently count as zero."""
        purchase = frame["event_type"] == "purchase"
        return ~purchase | (frame["amount"].notna() & frame["currency"].notna())

    class Config:
        description = "Each valid clickstream event once."
        strict = True
        coerce = False
        metadata = pii("extra_fields")


class SessionsModel(pa.DataFrameModel):
    """Visits built from the events (`transformation/sessions`)."""

    session_key: Series[str] = pa.Field(unique=True, description="Stable key of the session.")
    session_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN, description="Day the session started (YYYY-MM-DD): the partition."
    )
    customer_id: Series[NullableInt] = pa.Field(
        nullable=True, description="Customer's source key if signed in during the session."
    )
    visitor: Series[str] = pa.Field(
        description="Who visited: the customer if known, else the source session."
    )
    first_session_id: Series[str] = pa.Field(description="Source session id of the session's first event.")
    started_at: Series[UtcTimestamp] = pa.Field(description="Time of the first event (UTC).")
    ended_at: Series[UtcTimestamp] = pa.Field(description="Time of the last event (UTC).")
    duration_seconds: Series[float] = pa.Field(ge=0, description="`ended_at` minus `started_at`, in seconds.")
    events: Series[int] = pa.Field(ge=1, description="Events in the session.")
    purchases: Series[int] = pa.Field(ge=0, description="Purchase events in the session.")
    revenue_eur: Series[float] = pa.Field(ge=0, description="Sum of the purchases' `amount_eur`.")
    device: Series[str] = pa.Field(nullable=True, description="Device class of the first event.")
    converted: Series[bool] = pa.Field(description="Whether the session had a purchase.")

    @pa.dataframe_check(error="ended_at before started_at")
    def ends_after_start(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["ended_at"] >= frame["started_at"]

    @pa.dataframe_check(error="more purchases than events")
    def purchases_are_events(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["purchases"] <= frame["events"]

    class Config:
        description = "Visits built from the events."
        strict = True
        coerce = False
        metadata = pii()


class QuarantineModel(pa.DataFrameModel):
    """Rejected records (`transformation/quarantine`); see :mod:`de_assets.transformation.quarantine`."""

    asset: Series[str] = pa.Field(description="Asset that rejected the record, e.g. `transformation/events`.")
    partition: Series[str] = pa.Field(description="That asset's partition key.")
    reason: Series[str] = pa.Field(isin=REASONS, description="Why it was rejected (a stable reason code).")
    detail: Series[str] = pa.Field(description="Human-readable specifics, without PII.")
    raw_asset: Series[str] = pa.Field(
        description="Raw asset keeping the payload, e.g. `ingestion/raw_events`."
    )
    raw_partition: Series[str] = pa.Field(description="Partition of `raw_asset` holding the payload.")
    source_file: Series[str] = pa.Field(nullable=True, description="File records: the landing file.")
    line_number: Series[NullableInt] = pa.Field(
        nullable=True, ge=1, description="File records: 1-based line in `source_file`."
    )
    source_table: Series[str] = pa.Field(nullable=True, description="Table records: the source table.")
    source_key: Series[str] = pa.Field(nullable=True, description="Table records: the row's source key.")
    detected_at: Series[UtcTimestamp] = pa.Field(description="When it was rejected (UTC).")

    @pa.dataframe_check(error="points at neither a file nor a table")
    def points_at_payload(cls, frame: pd.DataFrame) -> pd.Series:
        """A reject that cannot be traced to its payload cannot be reviewed or replayed."""
        return frame["source_file"].notna() | frame["source_table"].notna()

    class Config:
        description = "Rejected records with where their payload is kept and why."
        strict = True
        coerce = False
        metadata = pii()


# --- serving ---------------------------------------------------------------------------------------


class DailyKpisModel(pa.DataFrameModel):
    """Business KPIs per day and country (`serving/daily_kpis`); see :mod:`de_assets.serving.kpis`."""

    kpi_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN, description="Day of the figures (YYYY-MM-DD): the partition."
    )
    country: Series[str] = pa.Field(
        description="Customer's country (ISO 3166-1 alpha-2), or `unknown` for anonymous visitors and "
        "customers the warehouse does not know."
    )
    orders: Series[int] = pa.Field(ge=0, description="Orders created on the day, cancelled ones excluded.")
    cancelled_orders: Series[int] = pa.Field(ge=0, description="Orders created on the day and cancelled.")
    revenue_eur: Series[float] = pa.Field(ge=0, description="Sum of the `orders`' amounts in EUR.")
    average_order_value_eur: Series[float] = pa.Field(
        ge=0, nullable=True, description="`revenue_eur` / `orders`; null without orders."
    )
    customers: Series[int] = pa.Field(ge=0, description="Distinct customers among `orders`.")
    sessions: Series[int] = pa.Field(ge=0, description="Sessions started on the day.")
    converted_sessions: Series[int] = pa.Field(ge=0, description="Sessions with a purchase event.")
    conversion_rate: Series[float] = pa.Field(
        ge=0, le=1, nullable=True, description="`converted_sessions` / `sessions`; null without sessions."
    )
    events: Series[int] = pa.Field(ge=0, description="Events that happened on the day.")
    late_events: Series[int] = pa.Field(ge=0, description="Of those, events delivered after the day.")
    late_event_share: Series[float] = pa.Field(
        ge=0, le=1, nullable=True, description="`late_events` / `events`; null without events."
    )

    @pa.dataframe_check(error="day and country repeat")
    def one_row_per_country(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame.duplicated(["kpi_day", "country"], keep=False)

    class Config:
        description = "Business KPIs per day and country."
        strict = True
        coerce = False
        metadata = pii()


class CustomerFeaturesModel(pa.DataFrameModel):
    """Point-in-time customer features (`serving/customer_features`); see :mod:`de_assets.serving.features`."""

    feature_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN, description="The features are as of the end of this day: the partition."
    )
    customer_token: Series[str] = pa.Field(
        str_fullmatch=HEX64_PATTERN,
        description="The customer's keyed token (as in `transformation/customers`).",
    )
    as_of: Series[UtcTimestamp] = pa.Field(description="End of `feature_day` (UTC): nothing later was used.")
    new_account: Series[bool] = pa.Field(description="Account opened in the last 7 days.")
    recency_days: Series[NullableInt] = pa.Field(
        ge=0, le=90, nullable=True, description="Days since the last non-cancelled order (within 90 days)."
    )
    orders_7d: Series[int] = pa.Field(ge=0, description="Non-cancelled orders created in the last 7 days.")
    orders_30d: Series[int] = pa.Field(ge=0, description="Non-cancelled orders created in the last 30 days.")
    orders_90d: Series[int] = pa.Field(ge=0, description="Non-cancelled orders created in the last 90 days.")
    revenue_eur_7d: Series[float] = pa.Field(ge=0, description="Their amount in EUR, last 7 days.")
    revenue_eur_30d: Series[float] = pa.Field(ge=0, description="Their amount in EUR, last 30 days.")
    revenue_eur_90d: Series[float] = pa.Field(ge=0, description="Their amount in EUR, last 90 days.")
    sessions_7d: Series[int] = pa.Field(ge=0, description="Sessions in the last 7 days.")
    sessions_30d: Series[int] = pa.Field(ge=0, description="Sessions in the last 30 days.")
    events_7d: Series[int] = pa.Field(
        ge=0, description="Events in the last 7 days (arrived by the end of the day)."
    )
    events_30d: Series[int] = pa.Field(
        ge=0, description="Events in the last 30 days (arrived by the end of the day)."
    )
    preferred_device: Series[str] = pa.Field(
        nullable=True, description="Most frequent device of the last 30 days' events (ties: alphabetical)."
    )
    pii_key_fingerprint: Series[str] = pa.Field(
        str_fullmatch=HEX16_PATTERN, description="Fingerprint of the key the token was made with."
    )

    @pa.dataframe_check(error="a customer appears twice in a day")
    def one_row_per_customer(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame.duplicated(["feature_day", "customer_token"], keep=False)

    @pa.dataframe_check(error="a shorter window counts more than a longer one")
    def windows_nest(cls, frame: pd.DataFrame) -> pd.Series:
        return (
            (frame["orders_7d"] <= frame["orders_30d"])
            & (frame["orders_30d"] <= frame["orders_90d"])
            & (frame["sessions_7d"] <= frame["sessions_30d"])
            & (frame["events_7d"] <= frame["events_30d"])
        )

    class Config:
        description = "Point-in-time customer features."
        strict = True
        coerce = False
        metadata = pii("customer_token")


class CustomerSegmentsModel(pa.DataFrameModel):
    """What reverse ETL writes to the shop (`serving/customer_segments`); see :mod:`de_assets.serving.segments`."""

    computed_for_day: Series[str] = pa.Field(
        str_fullmatch=DAY_PATTERN, description="Day whose features gave the segment: the partition."
    )
    customer_id: Series[int] = pa.Field(description="The shop's own customer id.")
    segment: Series[str] = pa.Field(isin=SEGMENTS, description="new, active, at_risk or churned.")

    @pa.dataframe_check(error="a customer has two segments on one day")
    def one_row_per_customer(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame.duplicated(["computed_for_day", "customer_id"], keep=False)

    class Config:
        description = "Customer segments for the shop."
        strict = True
        coerce = False
        metadata = pii()
