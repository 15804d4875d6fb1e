"""Column schemas shared by both tiers: Arrow types are the common language.

A new column may appear at any time (it is added to the table or unified across files); a column may
widen (int32 → int64, int → float, a finer timestamp unit, an all-null column gaining a type). Any
other type change is refused before anything is written.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa

from de_assets.storage.tier import IncompatibleSchemaError


def arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    """The Arrow schema a frame is stored with (index dropped)."""
    return pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()


def _normalised(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _normalised(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t):
        return pa.binary()
    return t


def merged_type(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The type that holds both ``old`` and ``new`` values, or None if the change is incompatible."""
    old, new = _normalised(old), _normalised(new)
    if old.equals(new):
        return old
    if pa.types.is_null(old):
        return new
    if pa.types.is_null(new):
        return old
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        if pa.types.is_signed_integer(old) != pa.types.is_signed_integer(new):
            return pa.int64()
        return old if old.bit_width >= new.bit_width else new
    if pa.types.is_integer(old) and pa.types.is_floating(new):
        return new if new.bit_width == 64 else pa.float64()
    if pa.types.is_floating(old) and (pa.types.is_floating(new) or pa.types.is_integer(new)):
        return pa.float64()
    if pa.types.is_timestamp(old) and pa.types.is_timestamp(new):
        if (old.tz is None) != (new.tz is None):
            return None
        units = ["s", "ms", "us", "ns"]
        finer = max(old.unit, new.unit, key=units.index)
        return pa.timestamp(finer, tz=old.tz)
    if pa.types.is_date(old) and pa.types.is_date(new):
        return pa.date32()
    if pa.types.is_decimal(old) and pa.types.is_decimal(new) and old.scale == new.scale:
        return pa.decimal128(max(old.precision, new.precision), old.scale)
    return None


def merge_schemas(existing: pa.Schema, incoming: pa.Schema, where: str) -> pa.Schema:
    """Existing columns (in order, widened where needed) followed by the new ones.

    Raises :class:`IncompatibleSchemaError` naming every column whose type cannot be carried over.
    """
    fields: list[pa.Field] = []
    problems: list[str] = []
    incoming_by_name = {f.name: f for f in incoming}
    for old_field in existing:
        new_field = incoming_by_name.get(old_field.name)
        if new_field is None:
            fields.append(old_field.with_nullable(True))
            continue
        merged = merged_type(old_field.type, new_field.type)
        if merged is None:
            problems.append(f"{old_field.name}: stored as {old_field.type}, new data is {new_field.type}")
        else:
            fields.append(pa.field(old_field.name, merged))
    existing_names = set(existing.names)
    fields.extend(f for f in incoming if f.name not in existing_names)
    if problems:
        raise IncompatibleSchemaError(
            f"incompatible column type change for {where}: "
            + "; ".join(problems)
            + ". Write the column under a new name or migrate the stored data first."
        )
    return pa.schema(fields)


def column_schema(frame: pd.DataFrame) -> dg.TableSchema:
    """``dagster/column_schema`` metadata for a frame."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name=str(name), type=str(dtype)) for name, dtype in frame.dtypes.items()]
    )
