"""Helpers for testing code that uses flask-loyalty."""

from __future__ import annotations

import datetime as dt
import threading


class FrozenClock:
    """A clock that stands still until moved; pass it as ``Loyalty(clock=...)``.

    :param start: the initial time (naive UTC, or aware and converted).

    .. code-block:: python

        clock = FrozenClock(datetime(2026, 1, 1))
        loyalty = Loyalty(db=db, clock=clock)
        clock.advance(days=30)
    """

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = _naive_utc(start or dt.datetime.now(dt.UTC))

    def __call__(self) -> dt.datetime:
        """The clock's current time."""
        with self._lock:
            return self._now

    def set(self, when: dt.datetime) -> None:
        """Move the clock to ``when``."""
        with self._lock:
            self._now = _naive_utc(when)

    def advance(self, **delta: float) -> dt.datetime:
        """Move the clock forward by a :class:`~datetime.timedelta` given as keywords."""
        with self._lock:
            self._now += dt.timedelta(**delta)
            return self._now


def _naive_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value
