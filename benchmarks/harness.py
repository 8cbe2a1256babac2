"""What every workload shares: the app, raw connections, bulk loading and results.

A :class:`Bench` is one database engine under test. It holds a Flask app with
the extension on that database (tables prefixed ``bench_``, so a shared
database's own tables are never touched) and opens raw DB-API connections
(:mod:`sqlite3` or :mod:`psycopg`, no SQLAlchemy) to the same database for the
floors. Both sides use the tables that the extension's ``create_all`` made, with
the same indexes and constraints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import statistics
import sys
import time
import typing as t

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_loyalty import Loyalty
from flask_loyalty.models import Models

#: Table prefix of the benchmark's tables.
PREFIX = "bench_"
#: The ledger-entry columns every raw insert of the benchmarks sets first.
ENTRY_COLUMNS = (
    "member_id, kind, points, delta_available, delta_pending, delta_reserved,"
    " available_after, pending_after, reserved_after, source_key, params_hash"
)
#: The extension's tables by the names the benchmarks' SQL uses for them.
TABLES = {
    "member": "member",
    "lot": "points_lot",
    "entry": "ledger_entry",
    "allocation": "lot_allocation",
    "order": "order",
    "line": "order_line",
}
#: Seconds a raw SQLite connection waits for the write lock (the pysqlite default).
SQLITE_TIMEOUT = 5.0


def log(message: str) -> None:
    """Print progress to stderr, keeping stdout for the JSON results."""
    print(message, file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Result:
    """One workload's figures on one engine.

    ``ratio`` is ``ours / floor``; the workload is ``met`` when the ratio is on
    the right side of ``limit`` (``>=`` when higher is better) and every extra
    condition in ``conditions`` holds.
    """

    workload: str
    engine: str
    ours: float
    floor: float
    limit: float
    higher_is_better: bool
    conditions: dict[str, bool] = dataclasses.field(default_factory=dict)
    extra: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """``ours / floor``."""
        return self.ours / self.floor if self.floor else float("inf")

    @property
    def target(self) -> str:
        """The target as text, e.g. ``">= 0.6"``."""
        return f"{'>=' if self.higher_is_better else '<='} {self.limit}"

    @property
    def met(self) -> bool:
        """Whether the ratio meets the target and every condition holds."""
        ok = self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit
        return ok and all(self.conditions.values())

    def as_dict(self) -> dict[str, t.Any]:
        """The JSON object printed for this result."""
        return {
            "workload": self.workload,
            "engine": self.engine,
            "ours": round(self.ours, 3),
            "floor": round(self.floor, 3),
            "ratio": round(self.ratio, 3),
            "target": self.target,
            "met": self.met,
            **self.conditions,
            **self.extra,
        }


class Raw:
    """A raw DB-API connection of the floor, with one way to run SQL on both engines.

    SQL is written once with ``?`` placeholders and ``FOR UPDATE`` where
    PostgreSQL needs a row lock; :meth:`Bench.sql` adapts it.
    """

    def __init__(self, bench: Bench) -> None:
        self.sqlite = bench.engine == "sqlite"
        self.conn = bench.connect()
        self.cur = self.conn.cursor()

    def begin(self) -> None:
        """Begin a write transaction (``BEGIN IMMEDIATE`` on SQLite, implicit on PostgreSQL)."""
        if self.sqlite:
            self.cur.execute("BEGIN IMMEDIATE")

    def run(self, sql: str, params: t.Sequence[t.Any] = ()) -> t.Any:
        """Execute adapted ``sql`` and return the cursor."""
        self.cur.execute(sql, params)
        return self.cur

    def many(self, sql: str, rows: t.Sequence[t.Sequence[t.Any]]) -> None:
        """Execute adapted ``sql`` once per parameter row."""
        if rows:
            self.cur.executemany(sql, rows)

    def commit(self) -> None:
        """Commit the transaction."""
        if self.sqlite:
            self.cur.execute("COMMIT")
        else:
            self.conn.commit()

    def rollback(self) -> None:
        """Roll the transaction back."""
        if self.sqlite:
            if self.conn.in_transaction:
                self.cur.execute("ROLLBACK")
        else:
            self.conn.rollback()

    def close(self) -> None:
        """Roll back whatever is left open and close the connection."""
        try:
            self.rollback()
        finally:
            self.conn.close()


class Bench:
    """One database engine under test: the app with the extension, and raw connections.

    :param engine: ``"sqlite"`` or ``"postgresql"``.
    :param url: the SQLAlchemy URL of the database.
    """

    def __init__(self, engine: str, url: str) -> None:
        self.engine = engine
        self.url = sa.engine.make_url(url)
        app = Flask("benchmarks")
        app.config.update(
            SQLALCHEMY_DATABASE_URI=url,
            # Enough connections for the 16 redeeming threads.
            SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 20, "max_overflow": 0},
            LOYALTY_TABLE_PREFIX=PREFIX,
            LOYALTY_CLI_GROUP=None,
            # The workloads call the ledger and the order hooks themselves.
            LOYALTY_ORDER_EVENTS_ENABLED=False,
        )
        self.db = SQLAlchemy(app)
        Loyalty(app, db=self.db)
        #: The Flask app with the extension.
        self.app = app

    @property
    def models(self) -> Models:
        """The extension's model classes for the benchmark's prefix."""
        return t.cast(Models, self.app.extensions["loyalty"].models)

    def table(self, name: str) -> str:
        """The full name of the extension's table ``name`` (e.g. ``"member"``)."""
        return PREFIX + name

    def sql(self, text: str, **names: str) -> str:
        """Adapt SQL written with ``?`` placeholders and ``FOR UPDATE`` to the engine.

        ``{member}``, ``{lot}``, ``{entry}``, ``{allocation}``, ``{order}`` and
        ``{line}`` are replaced by table names, other ``{name}`` by ``names``.
        """
        text = text.format(**{key: self.table(name) for key, name in TABLES.items()}, **names)
        if self.engine == "sqlite":
            return text.replace(" FOR UPDATE", "")
        return text.replace("%", "%%").replace("?", "%s")

    def insert(self, table: str, columns: str, rest: str, *, prefix: str = "") -> str:
        """An adapted ``INSERT INTO {table} (columns) rest`` that sets every column the ORM would.

        The extension's models give some columns Python-side defaults; the
        raw insert gives them the same values. Their names are added to
        ``columns`` and their values, as SQL literals, replace ``{defaults}``
        in ``rest`` (at the end of the ``VALUES`` or ``SELECT`` list).

        :param table: a key of :data:`TABLES` (``"member"``, ``"lot"``, ``"order"``...).
        :param prefix: SQL before ``INSERT`` (a ``WITH`` clause).
        :raises RuntimeError: if a required column has neither a value nor a
            constant default.
        """
        given = {name.strip() for name in columns.split(",")}
        names, values = [], []
        for column in self.models.metadata.tables[self.table(TABLES[table])].columns:
            if column.name in given or column.primary_key:
                continue
            default = column.default
            if default is not None and default.is_scalar:
                names.append(column.name)
                values.append(_literal(default.arg))
            elif not column.nullable and column.server_default is None:
                raise RuntimeError(f"The benchmarks give no value for {table}.{column.name}.")
        text = f"{prefix} INSERT INTO {{{table}}} ({columns}{''.join(', ' + n for n in names)}) {rest}"
        return self.sql(text.strip(), defaults="".join(", " + v for v in values))

    def ts(self, value: dt.datetime) -> t.Any:
        """A timestamp parameter stored exactly as SQLAlchemy stores it."""
        if self.engine == "sqlite":
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def shifted(self, base: str, seconds: str) -> str:
        """SQL for the timestamp parameter ``base`` moved by the SQL integer ``seconds``."""
        if self.engine == "sqlite":
            return f"strftime('%Y-%m-%d %H:%M:%S', {base}, ({seconds}) || ' seconds') || '.000000'"
        return f"(CAST({base} AS timestamp) + ({seconds}) * interval '1 second')"

    def numbers(self, count: int) -> str:
        """A ``WITH`` clause defining ``s(i)`` as the integers 1 to ``count``."""
        if self.engine == "sqlite":
            return f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {int(count)})"
        return f"WITH s(i) AS (SELECT generate_series(1, {int(count)}))"

    def connect(self) -> t.Any:
        """A new raw DB-API connection to the database."""
        if self.engine == "sqlite":
            return sqlite3.connect(
                t.cast(str, self.url.database),
                isolation_level=None,
                check_same_thread=False,
                timeout=SQLITE_TIMEOUT,
            )
        import psycopg

        args = self.url.translate_connect_args(username="user", database="dbname")
        return psycopg.connect(**args, **dict(self.url.query))

    def raw(self) -> Raw:
        """A new :class:`Raw` connection."""
        return Raw(self)

    def reset_schema(self) -> None:
        """Drop and re-create the benchmark's tables with the extension's ``create_all``."""
        with self.app.app_context():
            self.db.session.remove()
            self.db.engine.dispose()
            self.db.drop_all()
            self.db.create_all()
            self.db.engine.dispose()

    def load(self, statements: t.Sequence[tuple[str, t.Sequence[t.Any]]]) -> float:
        """Run bulk-loading ``statements`` (adapted SQL, parameters) in one transaction.

        Ends with ``ANALYZE`` so the planner knows the tables' sizes, as it
        would on a live database. Returns the seconds it took.
        """
        started = time.perf_counter()
        raw = self.raw()
        try:
            raw.begin()
            for statement, params in statements:
                raw.run(statement, params)
            raw.commit()
            raw.run("ANALYZE")
            if not raw.sqlite:
                raw.conn.commit()
        finally:
            raw.close()
        return time.perf_counter() - started

    def load_members(self, count: int, available: int, now: dt.datetime) -> tuple[str, tuple[t.Any, ...]]:
        """A statement creating members ``1..count`` with ``available`` points each."""
        return (
            self.insert(
                "member",
                "id, name, status, available, pending, reserved, lifetime_earned, created_at",
                "SELECT i, 'Member ' || CAST(i AS VARCHAR(20)), 'active', ?, 0, 0, ?, ?{defaults} FROM s",
                prefix=self.numbers(count),
            ),
            (available, available, self.ts(now)),
        )

    def scalar(self, sql: str, params: t.Sequence[t.Any] = ()) -> t.Any:
        """The first column of the first row of adapted ``sql`` (a read-only query)."""
        raw = self.raw()
        try:
            value = raw.run(sql, params).fetchone()[0]
            raw.rollback()
            return value
        finally:
            raw.close()

    def close(self) -> None:
        """Drop the benchmark's tables and close every connection."""
        with self.app.app_context():
            self.db.session.remove()
            self.db.engine.dispose()
            self.db.drop_all()
            self.db.engine.dispose()


def _literal(value: t.Any) -> str:
    """``value`` as an SQL literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"No SQL literal for the default {value!r}.")


def median(samples: t.Sequence[float]) -> float:
    """The median of repeated measurements.

    On a shared machine one round of either side can be much luckier or
    unluckier than the rest; the median of rounds run alternately is steadier
    than the best.
    """
    return statistics.median(samples)


def utcnow() -> dt.datetime:
    """The current time as naive UTC, to the microsecond."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
