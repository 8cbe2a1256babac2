"""Running the ledger's hot statements on the DB-API cursor.

Every ledger operation runs the same dozen statements (lock the member, move
its balances, insert the lot and the entry, take points from lots...). The
store builds them once; this module compiles each once per dialect and set
of parameters, and runs it on the cursor of the session's own connection, in
the session's transaction. That skips SQLAlchemy's per-execution work (cache
key, execution context, result set-up), which costs two to four times what
the driver itself does for such small statements.

What SQLAlchemy would do for these statements is done here too: parameters
and results go through the column types' processors (timestamps on SQLite,
booleans), an insert returns its new primary key, and a driver error is
raised as SQLAlchemy's exception for it (:class:`sqlalchemy.exc.IntegrityError`,
:class:`~sqlalchemy.exc.OperationalError`...), with a connection that is
gone invalidated.

A statement is run through SQLAlchemy instead when someone is watching the
engine's statements: a ``before_cursor_execute`` or ``after_cursor_execute``
listener (query recording, tracing), ``echo`` or the ``sqlalchemy.engine``
logger at ``INFO``. So is any statement this module cannot reproduce
exactly: one whose columns would get a Python-side default or ``onupdate``
value, or one with expanding parameters.
``LOYALTY_DRIVER_STATEMENTS_ENABLED = False`` runs them all through
SQLAlchemy.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

_ENGINE_LOG = logging.getLogger("sqlalchemy.engine")


def watched(conn: sa.Connection) -> bool:
    """Whether the statements run on ``conn`` are watched (listeners, echo or logging)."""
    dispatch = conn.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or conn.engine.echo
        or _ENGINE_LOG.isEnabledFor(logging.INFO)
    )


#: A parameter with no value of its own: leaving it out is an error.
_REQUIRED = object()


class _Slot(t.NamedTuple):
    """One parameter of a compiled statement, as ``construct_params`` fills it."""

    #: The name in the compiled statement, and the bind parameter's key.
    name: str
    key: str
    #: The value used when neither is given (:data:`_REQUIRED`: none).
    default: t.Any
    #: The type's bind processor, or ``None``.
    process: t.Callable[[t.Any], t.Any] | None


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """A statement compiled for one dialect and set of parameter names."""

    sql: str
    compiled: t.Any
    #: Parameter names in placeholder order (positional paramstyles), else ``None``.
    order: tuple[str, ...] | None
    #: Type processors of the parameters that have one.
    binds: tuple[tuple[str, t.Callable[[t.Any], t.Any]], ...]
    #: How :func:`_bind` fills each parameter, in the compiled statement's
    #: order, or ``None`` to go through ``construct_params``.
    slots: tuple[_Slot, ...] | None
    #: For a positional paramstyle, the slot of each placeholder, in order.
    positions: tuple[int, ...] | None
    #: The row type of the result (``None``: the statement returns no rows),
    #: and each column's type processor (or ``None``; none at all when no
    #: column has one).
    row: t.Any
    results: tuple[t.Callable[[t.Any], t.Any] | None, ...]
    #: Whether the statement is an insert whose new primary key is wanted.
    wants_key: bool
    #: Whether the new primary key comes back as the first column (``RETURNING``).
    returns_key: bool


class DriverResult:
    """The result of a statement run on the cursor: the few accessors the store uses."""

    __slots__ = ("_rows", "rowcount", "_key")

    def __init__(self, rows: list[t.Any], rowcount: int, key: t.Any) -> None:
        self._rows = rows
        #: The rows the statement matched (as the driver reports them).
        self.rowcount = rowcount
        self._key = key

    def first(self) -> t.Any:
        """The first row, or ``None``."""
        return self._rows[0] if self._rows else None

    def one(self) -> t.Any:
        """The only row.

        :raises sqlalchemy.exc.NoResultFound: if there is none.
        :raises sqlalchemy.exc.MultipleResultsFound: if there are more.
        """
        if not self._rows:
            raise sa_exc.NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise sa_exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def all(self) -> list[t.Any]:
        """Every row."""
        return list(self._rows)

    @property
    def inserted_primary_key(self) -> tuple[t.Any, ...]:
        """The new row's primary key, for an insert."""
        return (self._key,)


class Driver:
    """Compiles the store's hot statements once and runs them on the cursor."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[int, str, tuple[str, ...]], _Compiled | None] = {}

    def run(self, conn: sa.Connection, statement: t.Any, params: t.Any, cursor: t.Any = None) -> t.Any:
        """Execute ``statement`` with ``params`` on ``conn``'s cursor; ``None`` if it cannot.

        :param params: a mapping, or a list of mappings (run once each).
        :param cursor: a DB-API cursor of ``conn`` to run it on, kept open;
            by default a new one, closed afterwards.
        :returns: a :class:`DriverResult`, or ``None`` when the statement
            must run through SQLAlchemy (see the module's documentation).
        """
        many = isinstance(params, list)
        if many and not params:
            return None
        first = params[0] if many else (params or {})
        if many and len(params) == 1:
            # One row runs as one statement: an ``executemany`` costs more
            # (on psycopg, a pipeline and its extra round trip).
            many = False
        dialect = conn.dialect
        key = (id(statement), dialect.name, tuple(first))
        try:
            plan = self._compiled[key]
        except KeyError:
            plan = self._compiled[key] = _compile(statement, dialect, tuple(first))
        if plan is None:
            return None
        return _execute(
            conn, plan, [_bind(plan, p) for p in params] if many else _bind(plan, first), many, cursor
        )


def _compile(statement: t.Any, dialect: sa.Dialect, names: tuple[str, ...]) -> _Compiled | None:
    """Compile ``statement`` for ``dialect`` and ``names``, or ``None`` if it must not run on the cursor."""
    insert = isinstance(statement, sa.Insert)
    if insert and statement.select is not None:
        # INSERT ... FROM SELECT: the SELECT gives the values, and column
        # defaults are added to it only when the statement asks for them.
        if statement.include_insert_from_select_defaults:
            return None
    elif insert or isinstance(statement, sa.Update):
        given = set(names)
        for column in statement.table.columns:
            if column.key in given or column.primary_key:
                continue
            if (insert and column.default is not None) or (not insert and column.onupdate is not None):
                return None
    dml = isinstance(statement, sa.sql.dml.UpdateBase)
    returning = dml and len(statement.exported_columns) > 0
    columns: list[t.Any] = list(statement.exported_columns) if returning else []
    returns_key = False
    if insert and not returning and dialect.name == "postgresql":
        # psycopg has no lastrowid: the key comes back as a column. (The
        # copy keeps the original's memoized, empty ``exported_columns``.)
        columns = list(statement.table.primary_key.columns)
        statement = statement.returning(*columns)
        returns_key = returning = True
    compiled = statement.compile(dialect=dialect, column_keys=list(names) if dml else None)
    if compiled.escaped_bind_names or "POSTCOMPILE" in compiled.string:
        return None
    processors = {name: _bind_processor(bind.type, dialect) for name, bind in compiled.binds.items()}
    binds = tuple((name, processor) for name, processor in processors.items() if processor is not None)
    slots, positions = _slots(compiled, processors)
    if isinstance(statement, sa.Select):
        columns = list(statement.selected_columns)
    row = collections.namedtuple("Row", [c.key for c in columns], rename=True) if columns else None
    results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
    if not any(results):
        results = ()
    return _Compiled(
        sql=compiled.string,
        compiled=compiled,
        order=tuple(compiled.positiontup) if compiled.positional else None,
        binds=binds,
        slots=slots,
        positions=positions,
        row=row,
        results=results,
        wants_key=returns_key or (insert and not returning),
        returns_key=returns_key,
    )


#: SQLite's ``DATETIME`` storage format, SQLAlchemy's default.
_SQLITE_DATETIME = "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"


def _bind_processor(type_: t.Any, dialect: sa.Dialect) -> t.Callable[[t.Any], t.Any] | None:
    """The type's bind processor for ``dialect``.

    For SQLite's ``DATETIME`` in its default storage format, one that writes
    the same text with :meth:`datetime.datetime.isoformat` (SQLAlchemy's
    formats each field with ``%``); any other value goes to SQLAlchemy's.
    """
    impl = type_.dialect_impl(dialect)
    process: t.Callable[[t.Any], t.Any] | None = impl.bind_processor(dialect)
    if (
        process is None
        or dialect.name != "sqlite"
        or not isinstance(impl, sa.DateTime)
        or getattr(impl, "_storage_format", None) != _SQLITE_DATETIME
    ):
        return process
    fallback = process

    def datetime_text(value: t.Any) -> t.Any:
        if type(value) is dt.datetime:
            # Always 26 characters before any UTC offset, which the format leaves out.
            return value.isoformat(" ", "microseconds")[:26]
        return fallback(value)

    return datetime_text


def _slots(
    compiled: t.Any, processors: t.Mapping[str, t.Callable[[t.Any], t.Any] | None]
) -> tuple[tuple[_Slot, ...] | None, tuple[int, ...] | None]:
    """How to fill ``compiled``'s parameters without ``construct_params``.

    ``(None, None)`` when that cannot be done exactly as ``construct_params``
    would: a parameter whose value is computed when the statement runs, or a
    statement carrying values given with ``.params()``.
    """
    if getattr(compiled, "_collected_params", None) or any(b.callable for b in compiled.bind_names):
        return None, None
    slots = tuple(
        _Slot(name, bind.key, _REQUIRED if bind.required else bind.value, processors.get(name))
        for bind, name in compiled.bind_names.items()
    )
    if not compiled.positional:
        return slots, None
    index = {slot.name: i for i, slot in enumerate(slots)}
    return slots, tuple(index[name] for name in compiled.positiontup)


def _bind(plan: _Compiled, params: t.Mapping[str, t.Any]) -> t.Any:
    """The driver's parameters for ``params``: processed, in placeholder order where positional.

    A parameter is looked up by its key, then by its compiled name; one given
    neither way takes the statement's own value, as with ``construct_params``.
    """
    slots = plan.slots
    if slots is not None:
        values = []
        for name, key, default, process in slots:
            if key in params:
                value = params[key]
            elif name in params:
                value = params[name]
            elif default is _REQUIRED:
                message = f"A value is required for bind parameter {key!r}"
                raise sa_exc.InvalidRequestError(message, code="cd3x")
            else:
                value = default
            values.append(value if process is None or value is None else process(value))
        if plan.positions is None:
            return {slot.name: value for slot, value in zip(slots, values, strict=True)}
        return tuple(values[i] for i in plan.positions)
    values = plan.compiled.construct_params(params)
    for name, processor in plan.binds:
        value = values.get(name)
        if value is not None:
            values[name] = processor(value)
    return tuple(values[name] for name in plan.order) if plan.order is not None else values


def _execute(conn: sa.Connection, plan: _Compiled, params: t.Any, many: bool, given: t.Any) -> DriverResult:
    """Run ``plan`` on ``given``, a cursor of ``conn``'s DB-API connection, or on a new one."""
    fairy = conn.connection
    dialect = conn.dialect
    cursor = fairy.cursor() if given is None else given
    try:
        if many:
            cursor.executemany(plan.sql, params)
            return DriverResult([], cursor.rowcount, None)
        cursor.execute(plan.sql, params)
        rows: list[t.Any] = []
        if plan.row is not None:
            fetched = cursor.fetchall()
            if plan.results:
                fetched = [
                    tuple(v if f is None else f(v) for f, v in zip(plan.results, r, strict=True))
                    for r in fetched
                ]
            rows = [plan.row(*r) for r in fetched]
        key = None
        if plan.returns_key:
            key, rows = rows[0][0], []
        elif plan.wants_key:
            key = cursor.lastrowid
        return DriverResult(rows, cursor.rowcount, key)
    except dialect.loaded_dbapi.Error as error:
        gone = dialect.is_disconnect(error, fairy.dbapi_connection, cursor)
        if gone:
            conn.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            plan.sql,
            params,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=gone,
            dialect=dialect,
            ismulti=many,
        ) from error
    finally:
        if given is None:
            cursor.close()
