"""The store's one-statement credit of a locked member (PostgreSQL).

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.

A credit writes the member's balances, a lot and the entry that records it.
When the member is already locked (a paid order locks it with its first
read), every value is known before the writes but the lot's id, which the
entry refers to. On PostgreSQL, whose ``WITH`` takes data-modifying
statements, the three writes then go in one statement, and in one round trip
instead of three.
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa

from .transaction import KeyTaken

#: The lot's columns a credit sets, in the order of the statement.
LOT_COLUMNS = (
    "member_id",
    "points",
    "remaining",
    "pending",
    "expired",
    "available_from",
    "expires_at",
    "created_at",
)
#: The member's balances a credit sets.
BALANCE_COLUMNS = ("available", "pending", "reserved", "lifetime_earned")


class CreditQueries:
    """The one-statement credit of the store."""

    member: sa.Table
    lot: sa.Table
    entry: sa.Table
    execute: t.Callable[..., t.Any]
    prepared: t.Callable[..., t.Any]
    if t.TYPE_CHECKING:

        @property
        def dialect(self) -> str:
            """The dialect's name (see :attr:`LoyaltyStore.dialect`)."""

    @property
    def credits_in_one(self) -> bool:
        """Whether a credit of a locked member is one statement (PostgreSQL)."""
        return self.dialect == "postgresql"

    def credit_locked(
        self, member_id: int, balances: t.Any, lot: dict[str, t.Any], entry: dict[str, t.Any]
    ) -> tuple[int, int]:
        """Set a locked member's balances, insert the lot and the entry; return their ids.

        One statement: ``WITH`` the balances' update and the lot's insert,
        the entry's insert with the new lot's id. An entry whose source key
        is taken by a concurrent transaction is skipped (``ON CONFLICT DO
        NOTHING``) and :class:`~flask_loyalty.transaction.KeyTaken` raised, so
        that the operation is replayed, as
        :meth:`~flask_loyalty.store.LoyaltyStore.insert_entry` does.

        :param balances: the member's balances after the credit
            (:class:`~flask_loyalty.store.Balances`).
        :param lot: the lot's values (:data:`LOT_COLUMNS`).
        :param entry: the entry's values, but for ``lot_id``.
        """
        params = {
            "b_member": member_id,
            **{f"m_{name}": getattr(balances, name) for name in BALANCE_COLUMNS},
            **{f"l_{name}": lot[name] for name in LOT_COLUMNS},
            **{f"e_{name}": value for name, value in entry.items() if name != "lot_id"},
        }
        row = self.execute(self.prepared("credit_locked", self._build_credit, driven=True), params).first()
        if row is None:
            raise KeyTaken.of_source_key(entry["source_key"])
        return int(row.lot_id), int(row.id)

    def _build_credit(self) -> t.Any:
        from sqlalchemy.dialects import postgresql

        m, lot, e = self.member, self.lot, self.entry
        moved = (
            m.update()
            .where(m.c.id == sa.bindparam("b_member"))
            .values({name: sa.bindparam(f"m_{name}") for name in BALANCE_COLUMNS})
            .cte("moved")
        )
        new_lot = (
            lot.insert()
            .values({name: sa.bindparam(f"l_{name}", type_=lot.c[name].type) for name in LOT_COLUMNS})
            .returning(lot.c.id)
            .cte("new_lot")
        )
        names = [c.name for c in e.columns if c.name not in ("id", "lot_id")]
        values = sa.select(
            *(sa.bindparam(f"e_{name}", type_=e.c[name].type) for name in names), new_lot.c.id
        ).add_cte(moved)
        return (
            postgresql.insert(e)
            .from_select([*names, "lot_id"], values, include_defaults=False)
            .on_conflict_do_nothing()
            .returning(e.c.id, e.c.lot_id)
        )
