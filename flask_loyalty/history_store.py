"""The store's reads of a member's history and expiring points.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa


class HistoryQueries:
    """Keyset-paged history and expiry reads of the store."""

    models: t.Any
    execute: t.Callable[..., t.Any]

    def entries_page(
        self,
        member_id: int,
        *,
        limit: int,
        before_id: int | None = None,
        kinds: t.Sequence[str] = (),
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[t.Any]:
        """Up to ``limit`` of the member's entries, newest first, older than ``before_id``.

        One indexed range read on ``(member_id, id)`` whatever the history's
        length: pages are found by key, never by offset.
        """
        e = self.models.LedgerEntry.__table__
        query = sa.select(e).where(e.c.member_id == member_id)
        if before_id is not None:
            query = query.where(e.c.id < before_id)
        if kinds:
            query = query.where(e.c.kind.in_(list(kinds)))
        if since is not None:
            query = query.where(e.c.created_at >= since)
        if until is not None:
            query = query.where(e.c.created_at < until)
        return list(self.execute(query.order_by(e.c.id.desc()).limit(limit)).all())

    def expiring_points(self, member_id: int, now: dt.datetime, until: dt.datetime) -> tuple[int, t.Any]:
        """Points of the member's live lots that expire in ``[now, until)``, and the soonest expiry."""
        lot = self.models.PointsLot.__table__
        query = sa.select(
            sa.func.coalesce(sa.func.sum(lot.c.remaining), 0), sa.func.min(lot.c.expires_at)
        ).where(
            lot.c.member_id == member_id,
            lot.c.remaining > 0,
            lot.c.expired.is_(False),
            lot.c.pending.is_(False),
            lot.c.expires_at > now,
            lot.c.expires_at < until,
        )
        total, soonest = self.execute(query).one()
        return int(total), soonest

    def expiry_schedule(self, member_id: int, now: dt.datetime, limit: int) -> list[t.Any]:
        """The member's live points by expiry time, soonest first: ``(expires_at, points)`` rows."""
        lot = self.models.PointsLot.__table__
        query = (
            sa.select(lot.c.expires_at, sa.func.sum(lot.c.remaining).label("points"))
            .where(
                lot.c.member_id == member_id,
                lot.c.remaining > 0,
                lot.c.expired.is_(False),
                lot.c.pending.is_(False),
                lot.c.expires_at > now,
            )
            .group_by(lot.c.expires_at)
            .order_by(lot.c.expires_at)
            .limit(limit)
        )
        return list(self.execute(query).all())
