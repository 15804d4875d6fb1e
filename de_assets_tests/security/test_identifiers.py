import pytest

from de_assets.security.identifiers import (
    UnsafeNameError,
    safe_column_names,
    safe_identifier,
    safe_partition_key,
)
from de_assets.security.redaction import redact_sqlalchemy_url, redact_url


@pytest.mark.parametrize("name", ["orders", "_partition", "Orders2", "a" * 63])
def test_plain_identifiers_pass(name):
    assert safe_identifier(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "x; DROP TABLE y", 'a"b', "a b", "a-b", "é", "a" * 64, None, 3, "tab\tle", "a.b"],
)
def test_hostile_identifiers_are_refused(name):
    with pytest.raises(UnsafeNameError, match="refusing"):
        safe_identifier(name)


def test_column_names_must_be_unique_ignoring_case():
    with pytest.raises(UnsafeNameError, match="duplicate"):
        safe_column_names(["id", "ID"])
    assert safe_column_names(["id", "amount"]) == ["id", "amount"]


@pytest.mark.parametrize("key", ["2024-01-03", "2024-01-03-05:00", "eu-west", "v1.2"])
def test_partition_keys_pass(key):
    assert safe_partition_key(key) == key


@pytest.mark.parametrize(
    "key", ["../etc", "a/b", "a\\b", ".hidden", "", "x..y", "'; DROP TABLE t; --", "a\x00b"]
)
def test_hostile_partition_keys_are_refused(key):
    with pytest.raises(UnsafeNameError):
        safe_partition_key(key)


def test_redaction_hides_passwords():
    assert "s3cret" not in redact_sqlalchemy_url("postgresql+psycopg://user:s3cret@db:5432/shop")
    assert (
        redact_sqlalchemy_url("postgresql+psycopg://user:s3cret@db:5432/shop")
        == "postgresql+psycopg://user:***@db:5432/shop"
    )
    assert "s3cret" not in redact_sqlalchemy_url("not a url s3cret")
    assert redact_url("s3://key:s3cret@host/bucket/x") == "s3://***@host/bucket/x"
    assert redact_url("/plain/path") == "/plain/path"
