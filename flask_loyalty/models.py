"""The extension's SQLAlchemy models.

The models live in the host's database and are used through the host's
Flask-SQLAlchemy session, but they are declared on a base of the extension's
own, never on the host's ``db.Model``: a host base class that adds columns,
table arguments or listeners cannot change them. Table names carry the
``LOYALTY_TABLE_PREFIX`` (default ``loyalty_``), so the concrete classes are
built by :func:`build_models` once per prefix; the typed mixins below declare
their columns and are what annotations should name.

Every constraint has an explicit, prefix-aware name, so the schema is the same
whether it comes from ``create_all`` or from the shipped Alembic migrations and
whatever naming convention the host's metadata uses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship
from werkzeug.security import check_password_hash
from werkzeug.security import generate_password_hash

from .columns import BigId
from .columns import Timestamp
from .columns import utcnow
from .growth_models import ActionAwardMixin
from .growth_models import PaymentFingerprintMixin
from .growth_models import ReferralMixin
from .growth_models import ReminderMixin
from .reward_models import ApiResponseMixin
from .reward_models import RedemptionMixin
from .reward_models import RewardMixin
from .shop import CampaignMixin
from .shop import CartMixin
from .shop import LineMixin
from .shop import OrderLineMixin
from .shop import OrderMixin
from .shop import RefundMixin

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

#: Kinds of ledger entries. See ``docs/ledger.rst``.
ENTRY_KINDS = (
    "earn",
    "activate",
    "redeem",
    "reserve",
    "capture",
    "release",
    "reverse",
    "expire",
    "adjust",
)

#: Member account states.
MEMBER_STATUSES = ("active", "closed")
#: Reservation states.
RESERVATION_STATUSES = ("held", "captured", "released")


class MemberMixin(UserMixin):  # type: ignore[misc]
    """Columns of a loyalty member and the cached balances.

    The member row caches ``available``, ``pending``, ``reserved`` and
    ``lifetime_earned`` so that a balance read never sums the ledger; the
    ledger service keeps them equal to the ledger, and
    :func:`flask_loyalty.audit.verify` checks it. The class also serves as a
    Flask-Login user for shops that have no user model of their own.
    """

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(120), default="")
    email: Mapped[str | None] = mapped_column(sa.String(254), unique=True)
    phone: Mapped[str | None] = mapped_column(sa.String(40))
    password_hash: Mapped[str | None] = mapped_column(sa.String(255))
    #: The primary key of the host's user, as a string, when the host has one.
    user_id: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    #: Points that can be spent now (negative only under ``allow_negative``).
    available: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Points earned but not yet available (return window).
    pending: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Points held by open checkout reservations.
    reserved: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: Points ever earned, less reversals of earned points.
    lifetime_earned: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    #: The member's tier name (see ``LOYALTY_TIERS``), or ``None``.
    tier: Mapped[str | None] = mapped_column(sa.String(32))
    #: When the member reached the current tier.
    tier_since: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The member's own referral code (see :mod:`flask_loyalty.referrals`).
    referral_code: Mapped[str | None] = mapped_column(sa.String(16), unique=True)
    #: The member's date of birth, for the birthday bonus.
    birthday: Mapped[dt.date | None] = mapped_column(sa.Date)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    @property
    def is_active(self) -> bool:
        """Whether the member may log in and use the ledger."""
        return self.status == "active"

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Whether ``password`` matches the stored hash."""
        return bool(self.password_hash) and check_password_hash(t.cast(str, self.password_hash), password)


class LedgerEntryMixin:
    """An append-only record of one change of a member's points.

    ``delta_*`` are the signed changes of the member's buckets and ``*_after``
    the buckets after the entry. ``points`` is the operation's nominal signed
    amount (a clamped reversal records the full amount asked for here and the
    amount actually taken in the deltas).
    """

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    points: Mapped[int] = mapped_column(sa.BigInteger)
    delta_available: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    delta_pending: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    delta_reserved: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    available_after: Mapped[int] = mapped_column(sa.BigInteger)
    pending_after: Mapped[int] = mapped_column(sa.BigInteger)
    reserved_after: Mapped[int] = mapped_column(sa.BigInteger)
    #: The idempotency key: unique per member and kind.
    source_key: Mapped[str] = mapped_column(sa.String(191))
    #: A digest of the parameters the key was first used with.
    params_hash: Mapped[str] = mapped_column(sa.String(64))
    #: Points a reversal under ``clamp_to_zero`` could not take back because
    #: the member had spent them (0 for every other entry).
    shortfall: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    actor: Mapped[str | None] = mapped_column(sa.String(191))
    reason: Mapped[str | None] = mapped_column(sa.String(500))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class PointsLotMixin:
    """Points from one credit, spent soonest-expiry first and expired once."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    points: Mapped[int] = mapped_column(sa.BigInteger)
    remaining: Mapped[int] = mapped_column(sa.BigInteger)
    pending: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    expired: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    available_from: Mapped[dt.datetime] = mapped_column(Timestamp)
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class LotAllocationMixin:
    """How many points of a lot a debit took (or a return gave back)."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    points: Mapped[int] = mapped_column(sa.BigInteger)


class ReservationMixin:
    """Points held for a checkout until they are captured or released."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source_key: Mapped[str] = mapped_column(sa.String(191))
    points: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16), default="held")
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The order reference the points are held for (checkout holds).
    reference: Mapped[str | None] = mapped_column(sa.String(191))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class RepairMixin:
    """What :func:`flask_loyalty.audit.rebuild` changed in a member's cache."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    field: Mapped[str] = mapped_column(sa.String(32))
    cached_value: Mapped[int] = mapped_column(sa.BigInteger)
    ledger_value: Mapped[int] = mapped_column(sa.BigInteger)
    actor: Mapped[str | None] = mapped_column(sa.String(191))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class LoyaltyBase(DeclarativeBase):
    """Abstract root of the per-prefix bases; never mapped itself."""

    __abstract__ = True


@dataclasses.dataclass(frozen=True)
class Models:
    """The concrete model classes for one table prefix.

    Reach them as ``loyalty.models.Member`` and so on.
    """

    prefix: str
    metadata: sa.MetaData
    Member: type[t.Any]
    LedgerEntry: type[t.Any]
    PointsLot: type[t.Any]
    LotAllocation: type[t.Any]
    Reservation: type[t.Any]
    Repair: type[t.Any]
    Cart: type[t.Any]
    CartItem: type[t.Any]
    Order: type[t.Any]
    OrderLine: type[t.Any]
    Refund: type[t.Any]
    Campaign: type[t.Any]
    Reward: type[t.Any]
    Redemption: type[t.Any]
    ApiResponse: type[t.Any]
    Referral: type[t.Any]
    ActionAward: type[t.Any]
    Reminder: type[t.Any]
    PaymentFingerprint: type[t.Any]


_BUILT: dict[str, Models] = {}


def _fk(target: str, **kw: t.Any) -> sa.ForeignKey:
    return sa.ForeignKey(target, **kw)


def build_models(prefix: str = "loyalty_") -> Models:
    """Return the model classes whose tables are named ``prefix + name``.

    Classes are built once per prefix and shared by every app that uses it.

    :param prefix: the table-name prefix; letters, digits and underscores.
    :raises ValueError: if the prefix could not be part of a table name.
    """
    if prefix in _BUILT:
        return _BUILT[prefix]
    if not prefix.replace("_", "").isalnum() or not prefix.isascii() or len(prefix) > 20:
        raise ValueError(f"LOYALTY_TABLE_PREFIX {prefix!r} is not a usable table prefix.")
    p = prefix

    # Its own registry per prefix: classes of two prefixes share names
    # (``Member``, ``OrderLine``), and one registry would mix up their lookups.
    class Base(LoyaltyBase, DeclarativeBase):
        __abstract__ = True
        metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
        registry = sa.orm.registry(metadata=metadata)

    class Member(MemberMixin, Base):
        __tablename__ = f"{p}member"
        __table_args__ = (sa.CheckConstraint("status IN ('active', 'closed')", name="status"),)

    class LedgerEntry(LedgerEntryMixin, Base):
        __tablename__ = f"{p}ledger_entry"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        lot_id: Mapped[int | None] = mapped_column(_fk(f"{p}points_lot.id"))
        reservation_id: Mapped[int | None] = mapped_column(_fk(f"{p}reservation.id"))
        reverses_id: Mapped[int | None] = mapped_column(_fk(f"{p}ledger_entry.id"))
        __table_args__ = (
            sa.UniqueConstraint("member_id", "kind", "source_key"),
            sa.Index(f"ix_{p}ledger_entry_member_id_id", "member_id", "id"),
            sa.Index(f"ix_{p}ledger_entry_reverses_id", "reverses_id"),
        )

    class PointsLot(PointsLotMixin, Base):
        __tablename__ = f"{p}points_lot"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        __table_args__ = (
            sa.Index(f"ix_{p}points_lot_member_id_expires_at", "member_id", "expires_at"),
            sa.Index(f"ix_{p}points_lot_expired_expires_at", "expired", "expires_at"),
            sa.Index(f"ix_{p}points_lot_pending_available_from", "pending", "available_from"),
        )

    class Reservation(ReservationMixin, Base):
        __tablename__ = f"{p}reservation"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        __table_args__ = (
            sa.UniqueConstraint("member_id", "source_key"),
            sa.Index(f"ix_{p}reservation_status_expires_at", "status", "expires_at"),
            sa.Index(f"ix_{p}reservation_member_id_reference", "member_id", "reference"),
        )

    class LotAllocation(LotAllocationMixin, Base):
        __tablename__ = f"{p}lot_allocation"
        entry_id: Mapped[int] = mapped_column(_fk(f"{p}ledger_entry.id"), index=True)
        lot_id: Mapped[int] = mapped_column(_fk(f"{p}points_lot.id"), index=True)

    class Repair(RepairMixin, Base):
        __tablename__ = f"{p}repair"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), index=True)

    class Order(OrderMixin, Base):
        __tablename__ = f"{p}order"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), index=True)
        member: Mapped[Member] = relationship()
        lines: Mapped[list[OrderLine]] = relationship(
            back_populates="order", cascade="all, delete-orphan", order_by="OrderLine.id"
        )
        __table_args__ = (
            sa.CheckConstraint(
                "status IN ('placed', 'paid', 'completed', 'refunded', 'cancelled')", name="status"
            ),
        )

    class OrderLine(LineMixin, OrderLineMixin, Base):
        __tablename__ = f"{p}order_line"
        order_id: Mapped[int] = mapped_column(_fk(f"{p}order.id"), index=True)
        order: Mapped[Order] = relationship(back_populates="lines")

    class Refund(RefundMixin, Base):
        __tablename__ = f"{p}refund"
        order_id: Mapped[int] = mapped_column(_fk(f"{p}order.id"))
        __table_args__ = (sa.UniqueConstraint("order_id", "reference"),)

    class Campaign(CampaignMixin, Base):
        __tablename__ = f"{p}campaign"

    class Cart(CartMixin, Base):
        __tablename__ = f"{p}cart"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), index=True)
        items: Mapped[list[CartItem]] = relationship(
            back_populates="cart", cascade="all, delete-orphan", order_by="CartItem.id"
        )

    class CartItem(LineMixin, Base):
        __tablename__ = f"{p}cart_item"
        cart_id: Mapped[int] = mapped_column(_fk(f"{p}cart.id"), index=True)
        cart: Mapped[Cart] = relationship(back_populates="items")

    class Reward(RewardMixin, Base):
        __tablename__ = f"{p}reward"
        __table_args__ = (
            sa.CheckConstraint(
                "kind IN ('fixed_amount', 'percentage', 'free_shipping', 'free_product')", name="kind"
            ),
            sa.CheckConstraint("stock IS NULL OR stock >= 0", name="stock"),
        )

    class Redemption(RedemptionMixin, Base):
        __tablename__ = f"{p}redemption"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        reward_id: Mapped[int] = mapped_column(_fk(f"{p}reward.id"))
        __table_args__ = (
            sa.UniqueConstraint("member_id", "source_key"),
            sa.Index(f"ix_{p}redemption_reward_id_member_id", "reward_id", "member_id"),
            sa.Index(f"ix_{p}redemption_status_expires_at", "status", "expires_at"),
            sa.CheckConstraint("status IN ('issued', 'used', 'cancelled', 'expired')", name="status"),
        )

    class ApiResponse(ApiResponseMixin, Base):
        __tablename__ = f"{p}api_response"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        __table_args__ = (sa.UniqueConstraint("member_id", "key"),)

    class Referral(ReferralMixin, Base):
        __tablename__ = f"{p}referral"
        referrer_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), index=True)
        referee_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), unique=True)
        __table_args__ = (
            sa.Index(f"ix_{p}referral_status_id", "status", "id"),
            sa.CheckConstraint("status IN ('pending', 'rewarded', 'capped', 'rejected')", name="status"),
        )

    class ActionAward(ActionAwardMixin, Base):
        __tablename__ = f"{p}action_award"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        __table_args__ = (
            sa.UniqueConstraint("member_id", "action", "key"),
            sa.Index(f"ix_{p}action_award_member_id_action_period", "member_id", "action", "period"),
        )

    class Reminder(ReminderMixin, Base):
        __tablename__ = f"{p}reminder"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"), index=True)
        lot_id: Mapped[int] = mapped_column(_fk(f"{p}points_lot.id"))
        __table_args__ = (sa.UniqueConstraint("lot_id", "window_days"),)

    class PaymentFingerprint(PaymentFingerprintMixin, Base):
        __tablename__ = f"{p}payment_fingerprint"
        member_id: Mapped[int] = mapped_column(_fk(f"{p}member.id"))
        __table_args__ = (
            sa.UniqueConstraint("member_id", "digest"),
            sa.Index(f"ix_{p}payment_fingerprint_digest", "digest"),
        )

    models = Models(
        prefix=p,
        metadata=Base.metadata,
        Member=Member,
        LedgerEntry=LedgerEntry,
        PointsLot=PointsLot,
        LotAllocation=LotAllocation,
        Reservation=Reservation,
        Repair=Repair,
        Cart=Cart,
        CartItem=CartItem,
        Order=Order,
        OrderLine=OrderLine,
        Refund=Refund,
        Campaign=Campaign,
        Reward=Reward,
        Redemption=Redemption,
        ApiResponse=ApiResponse,
        Referral=Referral,
        ActionAward=ActionAward,
        Reminder=Reminder,
        PaymentFingerprint=PaymentFingerprint,
    )
    _BUILT[prefix] = models
    return models
