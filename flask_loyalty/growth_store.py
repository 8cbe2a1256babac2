"""The store's reads and writes of action awards, referrals, reminders and fingerprints.

Part of :class:`~flask_loyalty.store.LoyaltyStore` (a mixin of it): like the
rest of the store, the only code that touches the database session.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa


class GrowthQueries:
    """Queries of action points, referrals, expiry reminders and payment fingerprints."""

    models: t.Any
    execute: t.Callable[..., t.Any]
    fresh: t.Callable[[t.Any], t.Any]

    # -- action awards -----------------------------------------------------------

    def find_award(self, member_id: int, action: str, key: str) -> t.Any:
        """The member's award of ``action`` under ``key``, or ``None``."""
        a = self.models.ActionAward.__table__
        query = sa.select(a).where(a.c.member_id == member_id, a.c.action == action, a.c.key == key)
        return self.execute(self.fresh(query)).first()

    def count_awards(self, member_id: int, action: str, period: str) -> int:
        """How many awards of ``action`` the member has in ``period``."""
        a = self.models.ActionAward.__table__
        query = sa.select(sa.func.count()).where(
            a.c.member_id == member_id, a.c.action == action, a.c.period == period
        )
        return int(self.execute(self.fresh(query)).scalar_one())

    def insert_award(self, values: dict[str, t.Any]) -> int:
        """Record an award and return its id."""
        a = self.models.ActionAward.__table__
        return int(self.execute(a.insert().values(**values)).inserted_primary_key[0])

    def birthday_members(self, month: int, days: t.Sequence[int], after_id: int, limit: int) -> list[int]:
        """Ids of active members born on ``month``/any of ``days``, after ``after_id``, in id order."""
        m = self.models.Member.__table__
        query = (
            sa.select(m.c.id)
            .where(
                m.c.status == "active",
                m.c.birthday.is_not(None),
                sa.extract("month", m.c.birthday) == month,
                sa.extract("day", m.c.birthday).in_(list(days)),
                m.c.id > after_id,
            )
            .order_by(m.c.id)
            .limit(limit)
        )
        return [int(i) for i in self.execute(query).scalars()]

    # -- referrals ---------------------------------------------------------------

    def set_referral_code(self, member_id: int, code: str) -> None:
        """Give the member a referral code."""
        m = self.models.Member.__table__
        self.execute(
            m.update().where(m.c.id == member_id, m.c.referral_code.is_(None)).values(referral_code=code)
        )

    def member_contact(self, member_id: int) -> t.Any:
        """The member's id, email, referral code and status."""
        m = self.models.Member.__table__
        query = sa.select(m.c.id, m.c.email, m.c.referral_code, m.c.status).where(m.c.id == member_id)
        return self.execute(self.fresh(query)).first()

    def member_by_referral_code(self, code: str) -> t.Any:
        """The member whose referral code is ``code``, or ``None``."""
        m = self.models.Member.__table__
        query = sa.select(m.c.id, m.c.email, m.c.status).where(m.c.referral_code == code)
        return self.execute(query).first()

    def insert_referral(self, values: dict[str, t.Any]) -> int:
        """Record a referral and return its id."""
        r = self.models.Referral.__table__
        return int(self.execute(r.insert().values(**values)).inserted_primary_key[0])

    def find_referral(self, *, referral_id: int | None = None, referee_id: int | None = None) -> t.Any:
        """One referral (locking read), by id or by referee."""
        r = self.models.Referral.__table__
        where = r.c.id == referral_id if referral_id is not None else r.c.referee_id == referee_id
        return self.execute(sa.select(r).where(where).with_for_update()).first()

    def referrals_for_referee(self, referee_id: int) -> t.Any:
        """The referral of ``referee_id`` with the referee's name, or ``None``."""
        r, m = self.models.Referral.__table__, self.models.Member.__table__
        query = (
            sa.select(r, m.c.name.label("referee_name"))
            .join(m, m.c.id == r.c.referee_id)
            .where(r.c.referee_id == referee_id)
        )
        return self.execute(self.fresh(query)).first()

    def pending_referrals(self, after_id: int, limit: int) -> list[t.Any]:
        """Pending referrals after ``after_id``, in id order."""
        r = self.models.Referral.__table__
        query = (
            sa.select(r.c.id, r.c.referrer_id, r.c.referee_id)
            .where(r.c.status == "pending", r.c.id > after_id)
            .order_by(r.c.id)
            .limit(limit)
        )
        return list(self.execute(query).all())

    def referrals(
        self, *, referrer_id: int | None = None, limit: int = 50, before_id: int | None = None
    ) -> list[t.Any]:
        """Referrals, newest first: all, or one referrer's."""
        r, m = self.models.Referral.__table__, self.models.Member.__table__
        query = sa.select(r, m.c.name.label("referee_name")).join(m, m.c.id == r.c.referee_id)
        if referrer_id is not None:
            query = query.where(r.c.referrer_id == referrer_id)
        if before_id is not None:
            query = query.where(r.c.id < before_id)
        return list(self.execute(query.order_by(r.c.id.desc()).limit(limit)).all())

    def set_referral(self, referral_id: int, values: dict[str, t.Any]) -> None:
        """Change a referral's columns."""
        r = self.models.Referral.__table__
        self.execute(r.update().where(r.c.id == referral_id).values(**values))

    def count_rewarded_referrals(self, referrer_id: int, since: dt.datetime) -> int:
        """How many of the referrer's referrals earned the referrer's bonus since ``since``."""
        r = self.models.Referral.__table__
        query = sa.select(sa.func.count()).where(
            r.c.referrer_id == referrer_id, r.c.status == "rewarded", r.c.decided_at >= since
        )
        return int(self.execute(self.fresh(query)).scalar_one())

    def first_paid_orders(self, member_id: int, minimum_minor: int) -> t.Any:
        """The member's first paid order of at least ``minimum_minor`` (locking read), or ``None``."""
        o = self.models.Order.__table__
        query = (
            sa.select(o)
            .where(o.c.member_id == member_id, o.c.paid_at.is_not(None), o.c.total_minor >= minimum_minor)
            .order_by(o.c.paid_at, o.c.id)
            .limit(1)
            .with_for_update()
        )
        return self.execute(query).first()

    # -- payment fingerprints ----------------------------------------------------

    def add_fingerprint(self, member_id: int, digest: str, now: dt.datetime) -> None:
        """Record that the member paid with the method ``digest`` (once)."""
        f = self.models.PaymentFingerprint.__table__
        exists = sa.select(f.c.id).where(f.c.member_id == member_id, f.c.digest == digest)
        if self.execute(exists).first() is None:
            self.execute(f.insert().values(member_id=member_id, digest=digest, created_at=now))

    def shared_fingerprint(self, first: int, second: int) -> bool:
        """Whether two members paid with the same method."""
        f = self.models.PaymentFingerprint.__table__
        other = sa.select(f.c.digest).where(f.c.member_id == second)
        query = sa.select(f.c.id).where(f.c.member_id == first, f.c.digest.in_(other)).limit(1)
        return self.execute(self.fresh(query)).first() is not None

    def fingerprint_members(self, digest: str) -> list[int]:
        """Members who paid with the method ``digest``."""
        f = self.models.PaymentFingerprint.__table__
        return [int(i) for i in self.execute(sa.select(f.c.member_id).where(f.c.digest == digest)).scalars()]

    # -- expiry reminders --------------------------------------------------------

    def lots_to_remind(self, window: int, now: dt.datetime, after_id: int, limit: int) -> list[t.Any]:
        """Live lots expiring within ``window`` days that have no reminder of ``window`` days or fewer."""
        lot, rem = self.models.PointsLot.__table__, self.models.Reminder.__table__
        reminded = sa.select(rem.c.id).where(rem.c.lot_id == lot.c.id, rem.c.window_days <= window).exists()
        query = (
            sa.select(lot.c.id, lot.c.member_id, lot.c.remaining, lot.c.expires_at)
            .where(
                lot.c.remaining > 0,
                lot.c.expired.is_(False),
                lot.c.pending.is_(False),
                lot.c.expires_at > now,
                lot.c.expires_at <= now + dt.timedelta(days=window),
                lot.c.id > after_id,
                ~reminded,
            )
            .order_by(lot.c.id)
            .limit(limit)
        )
        return list(self.execute(self.fresh(query)).all())

    def insert_reminders(self, rows: list[dict[str, t.Any]]) -> None:
        """Record reminders."""
        if rows:
            self.execute(self.models.Reminder.__table__.insert(), rows)

    def member_reminders(self, member_id: int, limit: int = 20) -> list[t.Any]:
        """The member's latest reminders."""
        rem = self.models.Reminder.__table__
        query = sa.select(rem).where(rem.c.member_id == member_id).order_by(rem.c.id.desc()).limit(limit)
        return list(self.execute(query).all())
