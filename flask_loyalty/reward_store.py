"""The store's reads and writes of rewards, redemptions and checkout holds.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa


class RewardQueries:
    """Reward, redemption and order-reservation queries of the store."""

    models: t.Any
    execute: t.Callable[..., t.Any]
    fresh: t.Callable[[t.Any], t.Any]

    # -- rewards ---------------------------------------------------------------

    def insert_reward(self, values: dict[str, t.Any]) -> int:
        """Insert a reward and return its id."""
        r = self.models.Reward.__table__
        return int(self.execute(r.insert().values(**values)).inserted_primary_key[0])

    def update_reward(self, reward_id: int, values: dict[str, t.Any]) -> None:
        """Change a reward's columns."""
        r = self.models.Reward.__table__
        self.execute(r.update().where(r.c.id == reward_id).values(**values))

    def find_reward(self, *, reward_id: int | None = None, slug: str | None = None) -> t.Any:
        """The reward with ``reward_id`` or ``slug``, or ``None``."""
        r = self.models.Reward.__table__
        where = r.c.id == reward_id if reward_id is not None else r.c.slug == slug
        return self.execute(self.fresh(sa.select(r).where(where))).first()

    def rewards(self, *, include_inactive: bool = False) -> list[t.Any]:
        """Every reward (active ones only by default), cheapest first."""
        r = self.models.Reward.__table__
        query = sa.select(r).order_by(r.c.cost, r.c.id)
        if not include_inactive:
            query = query.where(r.c.active.is_(True))
        return list(self.execute(query).all())

    def take_stock(self, reward_id: int) -> bool:
        """Take one of the reward's stock; ``False`` if none is left.

        One conditional ``UPDATE``: concurrent redemptions queue on the
        reward's row and the database never lets stock go below zero.
        """
        r = self.models.Reward.__table__
        result = self.execute(
            r.update()
            .where(r.c.id == reward_id, sa.or_(r.c.stock.is_(None), r.c.stock > 0))
            .values(stock=sa.case((r.c.stock.is_(None), None), else_=r.c.stock - 1))
        )
        return bool(result.rowcount == 1)

    def return_stock(self, reward_id: int) -> None:
        """Give one back to the reward's stock (when it has a limit)."""
        r = self.models.Reward.__table__
        self.execute(
            r.update().where(r.c.id == reward_id, r.c.stock.is_not(None)).values(stock=r.c.stock + 1)
        )

    # -- redemptions -----------------------------------------------------------

    def insert_redemption(self, values: dict[str, t.Any]) -> int:
        """Insert a redemption and return its id."""
        d = self.models.Redemption.__table__
        return int(self.execute(d.insert().values(**values)).inserted_primary_key[0])

    def set_redemption(self, redemption_id: int, values: dict[str, t.Any]) -> None:
        """Change a redemption's columns."""
        d = self.models.Redemption.__table__
        self.execute(d.update().where(d.c.id == redemption_id).values(**values))

    def _redemption_query(self) -> t.Any:
        d, r = self.models.Redemption.__table__, self.models.Reward.__table__
        return sa.select(
            d,
            r.c.slug.label("reward_slug"),
            r.c.name.label("reward_name"),
            r.c.kind.label("reward_kind"),
            r.c.amount_minor.label("reward_amount_minor"),
            r.c.percent.label("reward_percent"),
            r.c.sku.label("reward_sku"),
        ).join(r, r.c.id == d.c.reward_id)

    def find_redemption(
        self,
        *,
        redemption_id: int | None = None,
        code: str | None = None,
        member_id: int | None = None,
        source_key: str | None = None,
        lock: bool = False,
    ) -> t.Any:
        """One redemption (with its reward's name and kind), or ``None``.

        Looked up by id, by code, or by member and source key; ``member_id``
        with an id or code restricts the match to that member's.
        """
        d = self.models.Redemption.__table__
        query = self._redemption_query()
        if redemption_id is not None:
            query = query.where(d.c.id == redemption_id)
        elif code is not None:
            query = query.where(d.c.code == code)
        else:
            query = query.where(d.c.source_key == source_key)
        if member_id is not None:
            query = query.where(d.c.member_id == member_id)
        if lock:
            query = query.with_for_update(of=d)
        return self.execute(self.fresh(query) if not lock else query).first()

    def member_redemptions(self, member_id: int, *, limit: int, before_id: int | None = None) -> list[t.Any]:
        """A member's redemptions, newest first."""
        d = self.models.Redemption.__table__
        query = self._redemption_query().where(d.c.member_id == member_id)
        if before_id is not None:
            query = query.where(d.c.id < before_id)
        return list(self.execute(query.order_by(d.c.id.desc()).limit(limit)).all())

    def held_count(self, member_id: int, reward_id: int) -> int:
        """How many of the reward the member holds (issued or used)."""
        d = self.models.Redemption.__table__
        query = sa.select(sa.func.count()).where(
            d.c.member_id == member_id, d.c.reward_id == reward_id, d.c.status.in_(("issued", "used"))
        )
        return int(self.execute(query).scalar_one())

    def held_counts(self, member_id: int) -> dict[int, int]:
        """How many of each reward the member holds (issued or used)."""
        d = self.models.Redemption.__table__
        query = (
            sa.select(d.c.reward_id, sa.func.count())
            .where(d.c.member_id == member_id, d.c.status.in_(("issued", "used")))
            .group_by(d.c.reward_id)
        )
        return {int(reward_id): int(count) for reward_id, count in self.execute(query).all()}

    def expire_redemptions(self, now: dt.datetime) -> int:
        """Mark issued redemptions whose code expired as expired; return how many."""
        d = self.models.Redemption.__table__
        result = self.execute(
            d.update()
            .where(d.c.status == "issued", d.c.expires_at.is_not(None), d.c.expires_at <= now)
            .values(status="expired")
        )
        return int(result.rowcount)

    # -- checkout holds --------------------------------------------------------

    def order_reservations(self, member_id: int, reference: str) -> list[t.Any]:
        """The member's reservations for order ``reference``, newest first.

        Holds made by :mod:`flask_loyalty.checkout` carry the reference; a
        hold made with ``points.reserve(key="order:<reference>")`` counts too.
        """
        v = self.models.Reservation.__table__
        query = (
            sa.select(v)
            .where(
                v.c.member_id == member_id,
                sa.or_(v.c.reference == reference, v.c.source_key == f"order:{reference}"),
            )
            .order_by(v.c.id.desc())
            .with_for_update()
        )
        return list(self.execute(query).all())

    def set_reservation_reference(self, reservation_id: int, reference: str) -> None:
        """Record which order a reservation holds points for."""
        v = self.models.Reservation.__table__
        self.execute(v.update().where(v.c.id == reservation_id).values(reference=reference))
