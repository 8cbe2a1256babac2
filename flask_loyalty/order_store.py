"""The store's reads and writes of orders, refunds, campaigns and tiers.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import typing as t

import sqlalchemy as sa

from .transaction import KeyTaken

#: PostgreSQL inserts a paid order with up to this many lines in one statement
#: (one statement is kept for each number of lines).
ONE_STATEMENT_LINES = 20


@dataclasses.dataclass(frozen=True)
class PaidOrderState:
    """What paying an order reads, under the member's lock (see :meth:`OrderQueries.paid_order_state`)."""

    #: The order's row (locked), or ``None`` if the order is new.
    order: t.Any
    #: The order's held reservations (locked), newest first.
    held: list[t.Any]
    #: The member's tier.
    tier: str | None
    #: The stored campaigns in force (rows, oldest first).
    campaigns: list[t.Any]
    #: The member's balances, read with its lock.
    balances: t.Any


class OrderQueries:
    """Order, refund, campaign and tier queries of the store."""

    models: t.Any
    execute: t.Callable[..., t.Any]
    balances_of: t.Callable[[t.Any, int], t.Any]
    lock_member: t.Callable[[int], t.Any]
    insert_unless_taken: t.Callable[..., int]
    fresh: t.Callable[[t.Any], t.Any]
    prepared: t.Callable[..., t.Any]
    order_reservations: t.Callable[[int, str], list[t.Any]]
    if t.TYPE_CHECKING:

        @property
        def dialect(self) -> str:
            """The dialect's name (see :attr:`LoyaltyStore.dialect`)."""

    def paid_order_state(self, member_id: int, reference: str, at: dt.datetime) -> PaidOrderState:
        """Lock the member and read everything paying order ``reference`` reads.

        On PostgreSQL and SQLite one statement locks the member's row, reads
        its balances and tier, and tells whether the order exists, whether it
        has held reservations and whether any stored campaign is in force;
        only what exists is then read in full. A first payment with no hold
        and no campaign reads one row. On MySQL and MariaDB, whose reads
        inside a host's transaction must lock to see the latest rows, the
        member is locked first and each is read on its own.

        On PostgreSQL a statement that waited for the lock reads the other
        tables as they were before it waited. Every change of a reservation
        moves the member's ``reserved`` balance, so the statement also tells
        whether the member's row it locked is the one its snapshot sees: if
        not, the order, its holds and the campaigns are read again, now under
        the lock. An order inserted meanwhile by a transaction that only
        locked the member is caught by the order's unique reference (see
        :meth:`insert_paid_order`).

        :raises MemberNotFound: if there is no such member.
        :raises MemberClosed: if the member is closed.
        """
        if self.dialect in ("mysql", "mariadb"):
            balances = self.lock_member(member_id)
            has_order = has_held = has_campaigns = True
            tier = self.member_tier(member_id)[0]
        else:
            probe = self.execute(
                self.prepared("paid_order_probe", self._build_paid_order_probe, driven=True),
                {"b_member": member_id, "b_reference": reference, "b_key": f"order:{reference}", "b_at": at},
            ).first()
            balances = self.balances_of(probe, member_id)
            has_order, has_held, has_campaigns = probe.order_id is not None, probe.held, probe.campaigns
            tier = probe.tier
            if self.dialect == "postgresql" and not probe.current:
                has_order = has_held = has_campaigns = True
        held = self.order_reservations(member_id, reference) if has_held else []
        return PaidOrderState(
            order=self.find_order(reference) if has_order else None,
            held=[r for r in held if r.status == "held"],
            tier=tier,
            campaigns=self.active_campaigns(at) if has_campaigns else [],
            balances=balances,
        )

    def _build_paid_order_probe(self) -> t.Any:
        o, member = self.models.Order.__table__, self.models.Member.__table__
        v = self.models.Reservation.__table__
        reference: sa.BindParameter[str] = sa.bindparam("b_reference")
        held = sa.exists().where(
            v.c.member_id == sa.bindparam("b_member"),
            v.c.status == "held",
            sa.or_(v.c.reference == reference, v.c.source_key == sa.bindparam("b_key")),
        )
        campaigns = sa.exists().where(
            *self._campaign_in_force(sa.bindparam("b_at", type_=o.c.created_at.type))
        )
        m = member.alias("m")
        columns = [
            m.c.status, m.c.available, m.c.pending, m.c.reserved, m.c.lifetime_earned, m.c.tier,
            sa.select(o.c.id).where(o.c.reference == reference).scalar_subquery().label("order_id"),
            held.label("held"),
            campaigns.label("campaigns"),
        ]  # fmt: skip
        if self.dialect == "postgresql":
            # Whether the locked row (its latest version) is the one the
            # statement's snapshot sees: the same row version, the same xmin.
            seen = member.alias("m2")
            snapshot: sa.Select[t.Any] = sa.select(sa.literal_column("m2.xmin")).where(
                seen.c.id == sa.bindparam("b_member")
            )
            columns.append((sa.literal_column("m.xmin") == snapshot.scalar_subquery()).label("current"))
        return sa.select(*columns).where(m.c.id == sa.bindparam("b_member")).with_for_update(of=m)

    def insert_paid_order(self, values: dict[str, t.Any], lines: list[dict[str, t.Any]]) -> int:
        """Insert a new paid order and its lines; return the order's id.

        Where the engine has ``INSERT ... ON CONFLICT`` (PostgreSQL, SQLite),
        an order whose reference was taken meanwhile by a concurrent
        transaction raises :class:`~flask_loyalty.transaction.KeyTaken`
        (the operation is replayed and finds it) instead of failing the
        transaction. Elsewhere the member's lock was taken before the
        order was looked up, and it is a plain insert. On PostgreSQL an order
        with up to :data:`ONE_STATEMENT_LINES` lines is one statement:
        ``WITH`` the order's insert, the lines' insert taking its id.
        """
        taken = KeyTaken(f"Order {values['reference']!r} was recorded by a concurrent transaction.")
        (scalars, computed), (line_scalars, line_computed) = self._paid_order_defaults
        if (
            self.dialect == "postgresql"
            and 0 < len(lines) <= ONE_STATEMENT_LINES
            and computed.issubset(values)
            and line_computed.issubset(lines[0])
            and all(line.keys() == lines[0].keys() for line in lines)
        ):
            # The inserts of this statement get no column defaults: they are given here.
            values = {**scalars, **values}
            lines = [{**line_scalars, **line} for line in lines]
            params = {f"o_{name}": value for name, value in values.items()}
            for i, line in enumerate(lines):
                params.update({f"l{i}_{name}": value for name, value in line.items()})
            statement = self.prepared(
                f"insert_paid_order:{len(lines)}:{','.join(values)}",
                functools.partial(self._build_order_with_lines, tuple(values), tuple(lines[0]), len(lines)),
                driven=True,
            )
            row = self.execute(statement, params).first()
            if row is None:
                raise taken
            return int(row.order_id)
        if self.dialect not in ("postgresql", "sqlite"):
            order_id = self.save_order(None, values)
        else:
            order_id = self.insert_unless_taken(self.models.Order.__table__, values, taken)
        self.replace_order_lines(order_id, lines, new=True)
        return order_id

    @functools.cached_property
    def _paid_order_defaults(self) -> tuple[tuple[dict[str, t.Any], frozenset[str]], ...]:
        """For the orders and the lines: the columns with constant defaults (and
        them), and those with computed ones."""

        def defaults(table: sa.Table) -> tuple[dict[str, t.Any], frozenset[str]]:
            given = [(c.name, c.default) for c in table.columns if c.default is not None]
            return (
                {name: d.arg for name, d in given if isinstance(d, sa.ColumnDefault) and d.is_scalar},
                frozenset(name for name, d in given if not (isinstance(d, sa.ColumnDefault) and d.is_scalar)),
            )

        return defaults(self.models.Order.__table__), defaults(self.models.OrderLine.__table__)

    def _build_order_with_lines(
        self, names: tuple[str, ...], line_names: tuple[str, ...], count: int
    ) -> t.Any:
        """PostgreSQL: insert an order (unless its reference is taken) and ``count`` lines of it."""
        from sqlalchemy.dialects import postgresql

        o, ln = self.models.Order.__table__, self.models.OrderLine.__table__
        order = (
            postgresql.insert(o)
            .values({name: sa.bindparam(f"o_{name}", type_=o.c[name].type) for name in names})
            .on_conflict_do_nothing()
            .returning(o.c.id)
            .cte("new_order")
        )
        rows = [
            sa.select(
                order.c.id, *(sa.bindparam(f"l{i}_{name}", type_=ln.c[name].type) for name in line_names)
            )
            for i in range(count)
        ]
        source = rows[0] if count == 1 else sa.union_all(*rows)
        return (
            ln.insert()
            .from_select(["order_id", *line_names], source, include_defaults=False)
            .returning(ln.c.order_id)
        )

    def _campaign_in_force(self, at: t.Any) -> tuple[sa.ColumnElement[bool], ...]:
        c = self.models.Campaign.__table__
        return (
            c.c.active.is_(True),
            sa.or_(c.c.starts_at.is_(None), c.c.starts_at <= at),
            sa.or_(c.c.ends_at.is_(None), c.c.ends_at > at),
        )

    def find_order(self, reference: str) -> t.Any:
        """The order row with ``reference`` (locking read), or ``None``."""
        o = self.models.Order.__table__
        return self.execute(sa.select(o).where(o.c.reference == reference).with_for_update()).first()

    def save_order(self, order_id: int | None, values: dict[str, t.Any]) -> int:
        """Insert an order (``order_id`` ``None``) or update one; return its id."""
        o = self.models.Order.__table__
        if order_id is None:
            return int(
                self.execute(
                    self.prepared("insert_order", o.insert, driven=True), values
                ).inserted_primary_key[0]
            )
        self.execute(o.update().where(o.c.id == order_id).values(**values))
        return order_id

    def order_lines(self, order_id: int) -> list[t.Any]:
        """The order's lines in order (locking read)."""
        ln = self.models.OrderLine.__table__
        return list(
            self.execute(
                sa.select(ln).where(ln.c.order_id == order_id).order_by(ln.c.id).with_for_update()
            ).all()
        )

    def replace_order_lines(self, order_id: int, lines: list[dict[str, t.Any]], *, new: bool = False) -> None:
        """Make the order's lines ``lines``: updated in place when the order
        already has as many lines (the shop's own rows keep their ids),
        replaced otherwise.

        :param new: the order was inserted in this transaction and has no
            lines yet: they are inserted without reading.
        """
        ln = self.models.OrderLine.__table__
        if new:
            self.execute(
                self.prepared("insert_order_line", ln.insert, driven=True),
                [{**line, "order_id": order_id} for line in lines],
            )
            return
        ids = list(
            self.execute(sa.select(ln.c.id).where(ln.c.order_id == order_id).order_by(ln.c.id)).scalars()
        )
        if ids and len(ids) == len(lines):
            self.execute(
                ln.update().where(ln.c.id == sa.bindparam("line")),
                [{**line, "line": i} for i, line in zip(ids, lines, strict=True)],
            )
            return
        self.execute(ln.delete().where(ln.c.order_id == order_id))
        if lines:
            self.execute(ln.insert(), [{**line, "order_id": order_id} for line in lines])

    def update_order_lines(self, changes: list[dict[str, t.Any]]) -> None:
        """Set ``refunded_quantity`` and ``refunded_points`` of lines by ``id``."""
        if changes:
            ln = self.models.OrderLine.__table__
            self.execute(
                ln.update()
                .where(ln.c.id == sa.bindparam("line"))
                .values(
                    refunded_quantity=sa.bindparam("b_quantity"), refunded_points=sa.bindparam("b_refunded")
                ),
                [
                    {
                        "line": c["id"],
                        "b_quantity": c["refunded_quantity"],
                        "b_refunded": c["refunded_points"],
                    }
                    for c in changes
                ],  # fmt: skip
            )

    def find_refund(self, order_id: int, reference: str) -> t.Any:
        """The refund of the order with ``reference``, or ``None``."""
        r = self.models.Refund.__table__
        return self.execute(
            self.fresh(sa.select(r).where(r.c.order_id == order_id, r.c.reference == reference))
        ).first()

    def insert_refund(self, values: dict[str, t.Any]) -> None:
        """Record a refund."""
        self.execute(self.models.Refund.__table__.insert().values(**values))

    def active_campaigns(self, at: dt.datetime) -> list[t.Any]:
        """Stored campaigns (rows, oldest first) that are switched on and whose
        window contains ``at``."""
        c = self.models.Campaign.__table__
        return list(self.execute(sa.select(c).where(*self._campaign_in_force(at)).order_by(c.c.id)).all())

    def member_tier(self, member_id: int) -> tuple[str | None, dt.datetime | None]:
        """The member's tier and since when."""
        m = self.models.Member.__table__
        row = self.execute(sa.select(m.c.tier, m.c.tier_since).where(m.c.id == member_id)).first()
        return (row.tier, row.tier_since) if row else (None, None)

    def set_member_tier(self, member_id: int, tier: str | None, since: dt.datetime) -> None:
        """Move the member to ``tier``."""
        m = self.models.Member.__table__
        self.execute(m.update().where(m.c.id == member_id).values(tier=tier, tier_since=since))

    def find_member_by_user(self, user_id: str, *, fresh: bool = False) -> t.Any:
        """The member linked to the host user ``user_id``, or ``None``.

        :param fresh: read the latest committed row (see :meth:`fresh`), after
            a concurrent enrolment of the user won: inside a host's transaction
            on MySQL, a plain read does not see it. A plain read takes no lock,
            so that concurrent first enrolments of a user wait on the unique
            index instead of deadlocking on gap locks.
        """
        m = self.models.Member.__table__
        query = sa.select(m.c.id).where(m.c.user_id == user_id)
        return self.execute(self.fresh(query) if fresh else query).first()
