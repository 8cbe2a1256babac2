"""The store's reads and writes of orders, refunds, campaigns and tiers.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa


class OrderQueries:
    """Order, refund, campaign and tier queries of the store."""

    models: t.Any
    execute: t.Callable[..., t.Any]
    fresh: t.Callable[[t.Any], t.Any]

    def find_order(self, reference: str) -> t.Any:
        """The order row with ``reference`` (locking read), or ``None``."""
        o = self.models.Order.__table__
        return self.execute(sa.select(o).where(o.c.reference == reference).with_for_update()).first()

    def save_order(self, order_id: int | None, values: dict[str, t.Any]) -> int:
        """Insert an order (``order_id`` ``None``) or update one; return its id."""
        o = self.models.Order.__table__
        if order_id is None:
            return int(self.execute(o.insert().values(**values)).inserted_primary_key[0])
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

    def replace_order_lines(self, order_id: int, lines: list[dict[str, t.Any]]) -> None:
        """Make the order's lines ``lines``: updated in place when the order
        already has as many lines (the shop's own rows keep their ids),
        replaced otherwise."""
        ln = self.models.OrderLine.__table__
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
        return list(
            self.execute(
                sa.select(c)
                .where(
                    c.c.active.is_(True),
                    sa.or_(c.c.starts_at.is_(None), c.c.starts_at <= at),
                    sa.or_(c.c.ends_at.is_(None), c.c.ends_at > at),
                )
                .order_by(c.c.id)
            ).all()
        )

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
