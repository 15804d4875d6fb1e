"""Reference data: the exchange rates that normalise every amount into one currency (EUR).

Reporting sums money across currencies, so each amount is converted with a rate from this table.
The table is **reference data versioned in code**, not a live feed: a rate change is a reviewed commit,
a rebuilt partition gives the same euros as before unless someone changed the table on purpose, and
the rate used is stored next to every converted amount (``fx_rate_to_eur``) so old rows stay
explainable after a change.

The rates are approximately the ECB euro foreign exchange reference rates of :data:`AS_OF`
(inverted to "EUR per unit", rounded to six significant figures). They are illustrative, good
enough for the simulated shop; a real deployment would load dated rates from the ECB into a table.

To change a rate or add a currency: edit :data:`_RATES_TO_EUR` (ISO 4217 code, EUR per one unit),
set :data:`AS_OF` to the date the rates are taken from, and rebuild the partitions that should use
the new rates. A currency that is not listed makes its orders ``unknown_currency`` rejects.
"""

from __future__ import annotations

import pandas as pd

AS_OF = "2024-01-02"
"""The day the rates are taken from (YYYY-MM-DD)."""

_RATES_TO_EUR: dict[str, float] = {
    "EUR": 1.0,
    "USD": 0.912742,  # 1 EUR = 1.0956 USD
    "GBP": 1.150682,  # 1 EUR = 0.86905 GBP
    "CHF": 1.074691,  # 1 EUR = 0.9305 CHF
    "JPY": 0.00642137,  # 1 EUR = 155.73 JPY
    "SEK": 0.0898110,  # 1 EUR = 11.1345 SEK
    "DKK": 0.134128,  # 1 EUR = 7.4556 DKK
    "NOK": 0.0890432,  # 1 EUR = 11.2305 NOK
    "PLN": 0.230441,  # 1 EUR = 4.3395 PLN
    "CAD": 0.686577,  # 1 EUR = 1.4565 CAD
}


def fx_rates() -> pd.DataFrame:
    """The rate table: ``currency`` (str, ISO 4217), ``rate_to_eur`` (float64, EUR per unit), ``as_of`` (str)."""
    return pd.DataFrame(
        {
            "currency": pd.Series(list(_RATES_TO_EUR), dtype="str"),
            "rate_to_eur": pd.Series(list(_RATES_TO_EUR.values()), dtype="float64"),
            "as_of": pd.Series([AS_OF] * len(_RATES_TO_EUR), dtype="str"),
        }
    )


def rates_to_eur() -> dict[str, float]:
    """Currency code → EUR per unit, the lookup the transformations use."""
    return dict(_RATES_TO_EUR)
