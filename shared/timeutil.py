"""UTC normalisation, written once.

The product's one instant is UTC (README, "Data semantics"): a naive value is taken as UTC (chDB and
``clickhouse-connect`` return naive UTC datetimes), an aware one is converted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd


def to_utc(value: Any) -> pd.Timestamp:
    """A tz-aware UTC ``pd.Timestamp`` from anything ``pd.Timestamp`` accepts; naive input is UTC."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc_datetime(value: datetime) -> datetime:
    """:func:`to_utc` for a stdlib ``datetime`` without the pandas round trip (the query API converts
    every row of a 10 000-point page, where ``pd.Timestamp`` would cost more than the query)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
