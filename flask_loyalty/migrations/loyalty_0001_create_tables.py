"""Create the flask-loyalty tables.

The schema is frozen here as it was at this revision, independent of
``flask_loyalty.models``: later model changes come as later revisions. Every
table name carries the migration's table prefix
(:func:`flask_loyalty.migrate.table_prefix`) and every constraint and index
has an explicit name wrapped in ``op.f()``, so that the host's naming
convention never renames them and the result equals ``db.create_all()``.

Revision ID: loyalty_0001
Revises:
Create Date: 2026-01-01 00:00:00
"""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from flask_loyalty.migrate import table_prefix

# revision identifiers, used by Alembic.
revision: str = "loyalty_0001"
down_revision: str | t.Sequence[str] | None = None
branch_labels: str | t.Sequence[str] | None = ("loyalty",)
depends_on: str | t.Sequence[str] | None = None

#: 64-bit ids; INTEGER on SQLite, which only auto-increments that type.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Naive UTC timestamps, with microseconds on MySQL and MariaDB.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

#: The tables in creation order (referenced tables first), without the prefix.
TABLES = (
    "member",
    "points_lot",
    "reservation",
    "ledger_entry",
    "lot_allocation",
    "repair",
    "order",
    "order_line",
    "refund",
    "campaign",
    "cart",
    "cart_item",
    "reward",
    "redemption",
    "api_response",
    "referral",
    "action_award",
    "reminder",
    "payment_fingerprint",
)


def _id() -> sa.Column[t.Any]:
    return sa.Column("id", BigId, nullable=False)


def _ref(name: str, nullable: bool = False) -> sa.Column[t.Any]:
    return sa.Column(name, BigId, nullable=nullable)


def _points(name: str, nullable: bool = False) -> sa.Column[t.Any]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _string(name: str, length: int, nullable: bool = False) -> sa.Column[t.Any]:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _time(name: str, nullable: bool = False) -> sa.Column[t.Any]:
    return sa.Column(name, Timestamp, nullable=nullable)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=False)


def _lines(table: str, parent: str, parent_column: str, *extra: sa.Column[t.Any]) -> None:
    op.create_table(
        table,
        _ref(parent_column),
        _id(),
        _string("sku", 64),
        _string("name", 200),
        _string("category", 64, nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        _points("unit_price_minor"),
        *extra,
        _fk(table, parent_column, parent),
        _pk(table),
    )
    _index(table, parent_column)


def upgrade() -> None:
    """Create the tables, their constraints and their indexes."""
    p = table_prefix()
    member = f"{p}member"
    op.create_table(
        member,
        _id(),
        _string("name", 120),
        _string("email", 254, nullable=True),
        _string("phone", 40, nullable=True),
        _string("password_hash", 255, nullable=True),
        _string("user_id", 64, nullable=True),
        _string("status", 16),
        _points("available"),
        _points("pending"),
        _points("reserved"),
        _points("lifetime_earned"),
        _string("tier", 32, nullable=True),
        _time("tier_since", nullable=True),
        _string("referral_code", 16, nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        _time("created_at"),
        _time("closed_at", nullable=True),
        sa.CheckConstraint("status IN ('active', 'closed')", name=op.f(f"ck_{member}_status")),
        _pk(member),
        sa.UniqueConstraint("email", name=op.f(f"uq_{member}_email")),
        sa.UniqueConstraint("user_id", name=op.f(f"uq_{member}_user_id")),
        sa.UniqueConstraint("referral_code", name=op.f(f"uq_{member}_referral_code")),
    )

    lot = f"{p}points_lot"
    op.create_table(
        lot,
        _ref("member_id"),
        _id(),
        _points("points"),
        _points("remaining"),
        sa.Column("pending", sa.Boolean(), nullable=False),
        sa.Column("expired", sa.Boolean(), nullable=False),
        _time("available_from"),
        _time("expires_at", nullable=True),
        _time("created_at"),
        _fk(lot, "member_id", member),
        _pk(lot),
    )
    _index(lot, "expired", "expires_at")
    _index(lot, "member_id", "expires_at")
    _index(lot, "pending", "available_from")

    reservation = f"{p}reservation"
    op.create_table(
        reservation,
        _ref("member_id"),
        _id(),
        _string("source_key", 191),
        _points("points"),
        _string("status", 16),
        _time("expires_at", nullable=True),
        _string("reference", 191, nullable=True),
        _time("created_at"),
        _fk(reservation, "member_id", member),
        _pk(reservation),
        sa.UniqueConstraint("member_id", "source_key", name=op.f(f"uq_{reservation}_member_id_source_key")),
    )
    _index(reservation, "status", "expires_at")
    _index(reservation, "member_id", "reference")

    entry = f"{p}ledger_entry"
    op.create_table(
        entry,
        _ref("member_id"),
        _ref("lot_id", nullable=True),
        _ref("reservation_id", nullable=True),
        _ref("reverses_id", nullable=True),
        _id(),
        _string("kind", 16),
        _points("points"),
        _points("delta_available"),
        _points("delta_pending"),
        _points("delta_reserved"),
        _points("available_after"),
        _points("pending_after"),
        _points("reserved_after"),
        _string("source_key", 191),
        _string("params_hash", 64),
        _points("shortfall"),
        _string("actor", 191, nullable=True),
        _string("reason", 500, nullable=True),
        _time("created_at"),
        _fk(entry, "member_id", member),
        _fk(entry, "lot_id", lot),
        _fk(entry, "reservation_id", reservation),
        _fk(entry, "reverses_id", entry),
        _pk(entry),
        sa.UniqueConstraint(
            "member_id", "kind", "source_key", name=op.f(f"uq_{entry}_member_id_kind_source_key")
        ),
    )
    _index(entry, "member_id", "id")
    _index(entry, "reverses_id")

    allocation = f"{p}lot_allocation"
    op.create_table(
        allocation,
        _ref("entry_id"),
        _ref("lot_id"),
        _id(),
        _points("points"),
        _fk(allocation, "entry_id", entry),
        _fk(allocation, "lot_id", lot),
        _pk(allocation),
    )
    _index(allocation, "entry_id")
    _index(allocation, "lot_id")

    repair = f"{p}repair"
    op.create_table(
        repair,
        _ref("member_id"),
        _id(),
        _string("field", 32),
        _points("cached_value"),
        _points("ledger_value"),
        _string("actor", 191, nullable=True),
        _time("created_at"),
        _fk(repair, "member_id", member),
        _pk(repair),
    )
    _index(repair, "member_id")

    order = f"{p}order"
    op.create_table(
        order,
        _ref("member_id"),
        _id(),
        _string("reference", 191),
        _string("currency", 3),
        _points("total_minor"),
        _points("shipping_minor"),
        _points("tax_minor"),
        _points("discount_minor"),
        _points("points_value_minor"),
        _points("refunded_minor"),
        _string("status", 16),
        _points("points"),
        _string("params_hash", 64),
        _time("created_at"),
        _time("paid_at", nullable=True),
        _time("completed_at", nullable=True),
        _time("cancelled_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('placed', 'paid', 'completed', 'refunded', 'cancelled')",
            name=op.f(f"ck_{order}_status"),
        ),
        _fk(order, "member_id", member),
        _pk(order),
        sa.UniqueConstraint("reference", name=op.f(f"uq_{order}_reference")),
    )
    _index(order, "member_id")
    _lines(
        f"{p}order_line",
        order,
        "order_id",
        _points("discount_minor"),
        _points("points"),
        sa.Column("refunded_quantity", sa.Integer(), nullable=False),
        _points("refunded_points"),
    )

    refund = f"{p}refund"
    op.create_table(
        refund,
        _ref("order_id"),
        _id(),
        _string("reference", 191),
        _points("amount_minor"),
        _points("points"),
        _string("params_hash", 64),
        _time("created_at"),
        _fk(refund, "order_id", order),
        _pk(refund),
        sa.UniqueConstraint("order_id", "reference", name=op.f(f"uq_{refund}_order_id_reference")),
    )

    campaign = f"{p}campaign"
    op.create_table(
        campaign,
        _id(),
        _string("name", 120),
        _string("multiplier", 20),
        _points("bonus"),
        _time("starts_at", nullable=True),
        _time("ends_at", nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("stacking", sa.Boolean(), nullable=False),
        _string("skus", 1000),
        _string("categories", 1000),
        _string("weekdays", 20),
        sa.Column("active", sa.Boolean(), nullable=False),
        _time("created_at"),
        _pk(campaign),
        sa.UniqueConstraint("name", name=op.f(f"uq_{campaign}_name")),
    )

    cart = f"{p}cart"
    op.create_table(
        cart,
        _ref("member_id"),
        _id(),
        _string("currency", 3),
        _time("created_at"),
        _fk(cart, "member_id", member),
        _pk(cart),
    )
    _index(cart, "member_id")
    _lines(f"{p}cart_item", cart, "cart_id")

    reward = f"{p}reward"
    op.create_table(
        reward,
        _id(),
        _string("slug", 64),
        _string("name", 120),
        _string("description", 2000),
        _string("kind", 16),
        _points("cost"),
        _points("amount_minor", nullable=True),
        sa.Column("percent", sa.Integer(), nullable=True),
        _string("sku", 64, nullable=True),
        _points("stock", nullable=True),
        sa.Column("per_member_limit", sa.Integer(), nullable=True),
        _string("tier", 32, nullable=True),
        _time("starts_at", nullable=True),
        _time("ends_at", nullable=True),
        sa.Column("valid_days", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _time("created_at"),
        _pk(reward),
        sa.UniqueConstraint("slug", name=op.f(f"uq_{reward}_slug")),
        sa.CheckConstraint(
            "kind IN ('fixed_amount', 'percentage', 'free_shipping', 'free_product')",
            name=op.f(f"ck_{reward}_kind"),
        ),
        sa.CheckConstraint("stock IS NULL OR stock >= 0", name=op.f(f"ck_{reward}_stock")),
    )

    redemption = f"{p}redemption"
    op.create_table(
        redemption,
        _ref("member_id"),
        _ref("reward_id"),
        _id(),
        _string("code", 32),
        _string("source_key", 191),
        _points("points"),
        _string("status", 16),
        _time("expires_at", nullable=True),
        _string("order_reference", 191, nullable=True),
        _time("used_at", nullable=True),
        _time("cancelled_at", nullable=True),
        _time("created_at"),
        _fk(redemption, "member_id", member),
        _fk(redemption, "reward_id", reward),
        _pk(redemption),
        sa.UniqueConstraint("code", name=op.f(f"uq_{redemption}_code")),
        sa.UniqueConstraint("member_id", "source_key", name=op.f(f"uq_{redemption}_member_id_source_key")),
        sa.CheckConstraint(
            "status IN ('issued', 'used', 'cancelled', 'expired')", name=op.f(f"ck_{redemption}_status")
        ),
    )
    _index(redemption, "reward_id", "member_id")
    _index(redemption, "status", "expires_at")

    response = f"{p}api_response"
    op.create_table(
        response,
        _ref("member_id"),
        _id(),
        _string("key", 191),
        _string("fingerprint", 64),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        _fk(response, "member_id", member),
        _pk(response),
        sa.UniqueConstraint("member_id", "key", name=op.f(f"uq_{response}_member_id_key")),
    )

    referral = f"{p}referral"
    op.create_table(
        referral,
        _ref("referrer_id"),
        _ref("referee_id"),
        _id(),
        _string("status", 16),
        _string("reason", 32, nullable=True),
        _string("order_reference", 191, nullable=True),
        _time("created_at"),
        _time("decided_at", nullable=True),
        _fk(referral, "referrer_id", member),
        _fk(referral, "referee_id", member),
        _pk(referral),
        sa.UniqueConstraint("referee_id", name=op.f(f"uq_{referral}_referee_id")),
        sa.CheckConstraint(
            "status IN ('pending', 'rewarded', 'capped', 'rejected')", name=op.f(f"ck_{referral}_status")
        ),
    )
    _index(referral, "referrer_id")
    _index(referral, "status", "id")

    award = f"{p}action_award"
    op.create_table(
        award,
        _ref("member_id"),
        _id(),
        _string("action", 64),
        _string("key", 120),
        _string("period", 16),
        _points("points"),
        _time("created_at"),
        _fk(award, "member_id", member),
        _pk(award),
        sa.UniqueConstraint("member_id", "action", "key", name=op.f(f"uq_{award}_member_id_action_key")),
    )
    _index(award, "member_id", "action", "period")

    reminder = f"{p}reminder"
    op.create_table(
        reminder,
        _ref("member_id"),
        _ref("lot_id"),
        _id(),
        sa.Column("window_days", sa.Integer(), nullable=False),
        _points("points"),
        _time("expires_at"),
        _time("created_at"),
        _fk(reminder, "member_id", member),
        _fk(reminder, "lot_id", lot),
        _pk(reminder),
        sa.UniqueConstraint("lot_id", "window_days", name=op.f(f"uq_{reminder}_lot_id_window_days")),
    )
    _index(reminder, "member_id")

    fingerprint = f"{p}payment_fingerprint"
    op.create_table(
        fingerprint,
        _ref("member_id"),
        _id(),
        _string("digest", 64),
        _time("created_at"),
        _fk(fingerprint, "member_id", member),
        _pk(fingerprint),
        sa.UniqueConstraint("member_id", "digest", name=op.f(f"uq_{fingerprint}_member_id_digest")),
    )
    _index(fingerprint, "digest")


def downgrade() -> None:
    """Drop the tables (and so every loyalty row)."""
    p = table_prefix()
    for name in reversed(TABLES):
        op.drop_table(f"{p}{name}")
