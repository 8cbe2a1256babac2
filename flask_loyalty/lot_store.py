"""The store's reads and writes of lots and of what entries took from them.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.

A debit takes points from the member's live lots, soonest expiry first, and
records an allocation per lot; a reversal gives them back to the same lots.
The statements every debit runs are built once (:meth:`LotQueries._lot_statements`)
and executed with parameters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa


@dataclasses.dataclass(frozen=True)
class SpendableLot:
    """A lot that a debit may take points from."""

    id: int
    remaining: int
    expires_at: dt.datetime | None


class LotQueries:
    """Lot and allocation queries of the store."""

    lot: sa.Table
    entry: sa.Table
    allocation: sa.Table
    execute: t.Callable[..., t.Any]
    if t.TYPE_CHECKING:

        def fresh(self, query: t.Any) -> t.Any:
            """See :meth:`LoyaltyStore.fresh`."""

    def _lot_statements(self) -> tuple[t.Any, ...]:
        """Build the statements of a debit's lots; return them (the store runs them on the driver)."""
        lot = self.lot
        self._insert_lot = lot.insert()
        self._spendable_lots = (
            sa.select(lot.c.id, lot.c.remaining, lot.c.expires_at)
            .where(
                lot.c.member_id == sa.bindparam("b_member"),
                lot.c.remaining > 0,
                lot.c.pending.is_(False),
                lot.c.expired.is_(False),
                sa.or_(lot.c.expires_at.is_(None), lot.c.expires_at > sa.bindparam("b_now")),
            )
            .order_by(lot.c.expires_at.is_(None), lot.c.expires_at, lot.c.id)
            .with_for_update()
        )
        self._member_lots = (
            sa.select(lot.c.id, lot.c.remaining, lot.c.expires_at, lot.c.pending)
            .where(
                lot.c.member_id == sa.bindparam("b_member"),
                sa.or_(
                    sa.and_(lot.c.remaining > 0, lot.c.pending.is_(False), lot.c.expired.is_(False)),
                    sa.and_(lot.c.pending.is_(True), lot.c.available_from <= sa.bindparam("b_now")),
                ),
            )
            .order_by(lot.c.expires_at.is_(None), lot.c.expires_at, lot.c.id)
            .with_for_update()
        )
        self._change_lot = (
            lot.update()
            .where(lot.c.id == sa.bindparam("lot"))
            .values(remaining=lot.c.remaining + sa.bindparam("delta"))
        )
        self._insert_allocation = self.allocation.insert()
        return (
            self._insert_lot,
            self._spendable_lots,
            self._member_lots,
            self._change_lot,
            self._insert_allocation,
        )

    def insert_lot(self, values: dict[str, t.Any]) -> int:
        """Create a lot and return its id."""
        result = self.execute(self._insert_lot, values)
        return int(result.inserted_primary_key[0])

    def get_lot(self, lot_id: int) -> t.Any:
        """The lot row with ``lot_id`` (locking read), or ``None``."""
        return self.execute(sa.select(self.lot).where(self.lot.c.id == lot_id).with_for_update()).first()

    def spendable_lots(self, member_id: int, now: dt.datetime) -> list[SpendableLot]:
        """The member's live lots, soonest expiry first, never-expiring last."""
        rows = self.execute(self._spendable_lots, {"b_member": member_id, "b_now": now}).all()
        return [SpendableLot(r.id, r.remaining, r.expires_at) for r in rows]

    def member_lots(self, member_id: int, now: dt.datetime) -> tuple[list[SpendableLot], bool]:
        """The member's live lots (as :meth:`spendable_lots`), and whether any lot is due.

        One locking read: the lots that can be spent, and those that are due
        to expire or to become available at ``now``.
        """
        rows = self.execute(self._member_lots, {"b_member": member_id, "b_now": now}).all()
        live = [
            SpendableLot(r.id, r.remaining, r.expires_at)
            for r in rows
            if not r.pending and (r.expires_at is None or r.expires_at > now)
        ]
        return live, len(live) < len(rows)

    def change_lots(self, entry_id: int, changes: t.Sequence[tuple[int, int, int]]) -> None:
        """Apply ``(lot, change of remaining, points allocated)`` triples for an entry.

        Each triple changes the lot's remaining points and records the
        allocation (positive when the entry took points, negative when it gave
        them back).
        """
        moved = [{"lot": lot_id, "delta": delta} for lot_id, delta, _ in changes if delta]
        if moved:
            # One row is executed as such: executemany costs more for one.
            self.execute(self._change_lot, moved if len(moved) > 1 else moved[0])
        allocated = [
            {"entry_id": entry_id, "lot_id": lot_id, "points": points} for lot_id, _, points in changes
        ]
        if allocated:
            self.execute(self._insert_allocation, allocated if len(allocated) > 1 else allocated[0])

    def allocations(self, entry_id: int) -> list[t.Any]:
        """What the entry took from each lot, with the lot's expiry state."""
        a, lot = self.allocation, self.lot
        return list(
            self.execute(
                self.fresh(
                    sa.select(a.c.lot_id, a.c.points, lot.c.expires_at, lot.c.expired)
                    .join(lot, lot.c.id == a.c.lot_id)
                    .where(a.c.entry_id == entry_id)
                    .order_by(a.c.id)
                )
            ).all()
        )

    def returned_to_lots(self, entry_ids: t.Sequence[int]) -> dict[int, int]:
        """Points already given back to each lot by the entries ``entry_ids``."""
        if not entry_ids:
            return {}
        a = self.allocation
        rows = self.execute(
            self.fresh(
                sa.select(a.c.lot_id, sa.func.sum(a.c.points))
                .where(a.c.entry_id.in_(entry_ids))
                .group_by(a.c.lot_id)
            )
        ).all()
        return {lot_id: -int(total) for lot_id, total in rows}

    def expired_unreversed(self, lot_id: int, earn_id: int) -> int:
        """Points of an expired lot that reversals of its earn have not yet accounted for.

        The lot's ``expire`` entry says how much expired; each later reversal
        of the earn ``earn_id`` records what it counted against that with an
        allocation on the lot.
        """
        e, a = self.entry, self.allocation
        expired = self.execute(
            self.fresh(sa.select(e.c.id, e.c.points).where(e.c.lot_id == lot_id, e.c.kind == "expire"))
        ).first()
        if expired is None:
            return 0
        counted = self.execute(
            self.fresh(
                sa.select(sa.func.coalesce(sa.func.sum(a.c.points), 0))
                .join(e, e.c.id == a.c.entry_id)
                .where(a.c.lot_id == lot_id, e.c.reverses_id == earn_id, e.c.id > expired.id)
            )
        ).scalar_one()
        return -int(expired.points) - int(counted)

    def reversal_ids(self, entry_id: int) -> list[int]:
        """Ids of the reversals of ``entry_id``."""
        e = self.entry
        return list(self.execute(self.fresh(sa.select(e.c.id).where(e.c.reverses_id == entry_id))).scalars())
