"""The reference exchange rates: a small, well-formed table that covers every currency the shop sells in."""

import datetime as dt

import pytest

from de_assets.generation.shop_model import CURRENCIES, UNKNOWN_CURRENCIES
from de_assets.transformation.reference import fx_rates, rates_to_eur

# ECB reference rates of 2024-01-02 as published (foreign currency per EUR).
ECB_PER_EUR = {"USD": 1.0956, "GBP": 0.86905, "JPY": 155.73, "CHF": 0.9305}


def test_table_shape_and_dtypes():
    table = fx_rates()
    assert [(name, str(dtype)) for name, dtype in table.dtypes.items()] == [
        ("currency", "str"),
        ("rate_to_eur", "float64"),
        ("as_of", "str"),
    ]
    assert table["currency"].is_unique
    assert table["currency"].str.fullmatch(r"[A-Z]{3}").all()
    assert (table["rate_to_eur"] > 0).all()
    assert table["as_of"].nunique() == 1
    dt.date.fromisoformat(table.loc[0, "as_of"])
    assert len(table) >= 6


def test_rates_are_eur_per_unit():
    rates = rates_to_eur()
    assert rates["EUR"] == 1.0
    for currency, per_eur in ECB_PER_EUR.items():
        assert rates[currency] * per_eur == pytest.approx(1.0, rel=1e-5)


def test_lookup_matches_the_table_and_is_a_copy():
    table = fx_rates()
    assert rates_to_eur() == dict(zip(table["currency"], table["rate_to_eur"], strict=True))
    rates_to_eur()["EUR"] = 2.0
    assert rates_to_eur()["EUR"] == 1.0


def test_every_simulated_currency_has_a_rate_and_no_invalid_code_does():
    rates = rates_to_eur()
    assert set(CURRENCIES) <= set(rates)
    assert set(UNKNOWN_CURRENCIES).isdisjoint(rates)
