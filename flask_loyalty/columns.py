"""Column types and defaults shared by every model."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Integer primary keys: 64-bit, but SQLite only auto-increments ``INTEGER``.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Naive UTC timestamps with microseconds on every engine.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
