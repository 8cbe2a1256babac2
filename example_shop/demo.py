"""Demo data: a catalogue, rewards, a running campaign and members with a year of orders.

An empty database is filled on the first run; ``flask --app example_shop
seed`` starts again from scratch. The history is made the way a real year
would have made it: through the shop's own checkout code, with the
extension's clock set back to each day in turn.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import typing as t

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import with_appcontext

from flask_loyalty import actions
from flask_loyalty import jobs
from flask_loyalty import members
from flask_loyalty import orders as loyalty_orders
from flask_loyalty import referrals
from flask_loyalty import reminders
from flask_loyalty import rewards
from flask_loyalty.extension import utcnow

from .extensions import db
from .extensions import loyalty
from .models import Category
from .models import Product
from .ordering import add_to_cart
from .ordering import fulfilment
from .ordering import pay
from .ordering import place_order
from .ordering import set_status
from .reviews import write_review

CATALOGUE = [
    ("tea", "Tea", "Loose-leaf teas from small gardens.", [
        ("TEA-SENCHA", "Sencha Green Tea", 1250, "#7cb342", "A bright, grassy Japanese green tea. 100 g."),
        ("TEA-EARLGREY", "Earl Grey", 980, "#5d4037", "Black tea with bergamot oil, the classic. 100 g."),
        ("TEA-JASMINE", "Jasmine Pearls", 1800, "#c0ca33", "Hand-rolled green tea with jasmine. 50 g."),
        ("TEA-ROOIBOS", "Rooibos Vanilla", 850, "#bf360c", "Caffeine-free red bush with vanilla. 100 g."),
        ("TEA-TASTER", "Tea Tasting Set", 900, "#689f38", "Five 10 g pouches to find your favourite."),
    ]),
    ("coffee", "Coffee", "Roasted every week, whole beans.", [
        ("COF-ETHIOPIA", "Ethiopia Yirgacheffe", 1590, "#8d6e63", "Floral and citrus, light roast. 250 g."),
        ("COF-COLOMBIA", "Colombia Huila", 1350, "#6d4c41", "Caramel and red apple, medium roast. 250 g."),
        ("COF-ESPRESSO", "House Espresso Blend", 1190, "#3e2723", "Chocolate and nuts, dark roast. 250 g."),
    ]),
    ("teaware", "Teaware", "Things to brew and drink from.", [
        ("WARE-TEAPOT", "Glass Teapot", 3200, "#0097a7", "Heat-proof glass with a steel infuser. 800 ml."),
        ("WARE-DRIPPER", "Pour-over Dripper", 2400, "#455a64", "Ceramic cone dripper for one or two cups."),
        ("WARE-MUG", "Stoneware Mug", 1400, "#1565c0", "Hand-glazed, 350 ml."),
    ]),
    ("treats", "Treats", "Something to go with it.", [
        ("TREAT-BISCOTTI", "Almond Biscotti", 650, "#f9a825", "Twice-baked, crunchy, eight pieces."),
        ("TREAT-CHOC", "Dark Chocolate 70%", 480, "#4e342e", "Single-origin bar. 80 g."),
    ]),
]  # fmt: skip

REWARDS = [
    {"slug": "free-shipping", "name": "Free delivery", "kind": "free_shipping", "cost": 300, "valid_days": 90,
     "description": "Standard or express delivery at no charge on your next order."},
    {"slug": "five-off", "name": "$5 off your order", "kind": "fixed_amount", "amount": "5.00", "cost": 500,
     "valid_days": 90, "description": "Five dollars off the goods of any order."},
    {"slug": "tea-taster", "name": "A free Tea Tasting Set", "kind": "free_product", "sku": "TEA-TASTER",
     "cost": 700, "stock": 40, "per_member_limit": 2, "valid_days": 60,
     "description": "Five teas to try, added to your next order for free."},
    {"slug": "ten-percent", "name": "10% off everything", "kind": "percentage", "percent": 10, "cost": 900,
     "valid_days": 60, "description": "Ten percent off the goods of your next order."},
    {"slug": "gold-teapot", "name": "$25 off, Gold members only", "kind": "fixed_amount", "amount": "25.00",
     "cost": 2000, "tier": "Gold", "valid_days": 30, "description": "For our most loyal customers."},
]  # fmt: skip

#: The demo logins (also shown on the login page and in the README).
DEMO_MEMBER = ("Dana Demo", "demo@example.com", "demo-password")
OWNER = ("Sam Owner", "owner@example.com", "owner-password")


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing a demo member did, ``days`` ago."""

    days: float
    #: ``order``, ``redeem``, ``complete``, ``refund-line``, ``refund-all``, ``cancel``, ``review``,
    #: ``none``.
    action: str
    items: tuple[tuple[str, int], ...] = ()
    shipping: str = "standard"
    points: int = 0
    #: The reward to redeem, or the reward whose code the order uses.
    reward: str = ""
    #: Which of the member's earlier orders a lifecycle step acts on (0 = first).
    order: int = -1
    #: Whether an order is paid at once (else it stays placed).
    pay: bool = True
    #: The text of a review (``items`` holds the SKU and the rating).
    text: str = ""


def _o(days: float, *items: tuple[str, int], **kw: t.Any) -> Step:
    return Step(days, "order", items, **kw)


DEMO_HISTORY = [
    _o(350, ("COF-ETHIOPIA", 2), ("TREAT-BISCOTTI", 1)),
    Step(345, "complete", order=0),
    _o(310, ("WARE-TEAPOT", 1), ("TEA-JASMINE", 1), points=300),
    Step(304, "complete", order=1),
    Step(300, "review", (("COF-ETHIOPIA", 5),), text="Bright and floral: my favourite morning coffee."),
    Step(280, "review", (("WARE-TEAPOT", 4),), text="Lovely to watch the leaves unfurl; the lid rattles."),
    _o(260, ("TEA-SENCHA", 2), ("WARE-MUG", 2), ("TREAT-CHOC", 3)),
    Step(255, "complete", order=2),
    Step(240, "refund-line", items=(("WARE-MUG", 1),), order=2),
    Step(205, "redeem", reward="free-shipping"),
    _o(204, ("COF-COLOMBIA", 2), ("TEA-EARLGREY", 1), shipping="express", reward="free-shipping"),
    Step(199, "complete", order=3),
    _o(150, ("WARE-DRIPPER", 1), ("COF-ESPRESSO", 2)),
    Step(146, "complete", order=4),
    _o(121, ("TEA-ROOIBOS", 2), points=200),
    Step(120, "cancel", order=5),
    _o(92, ("WARE-TEAPOT", 1), ("TEA-SENCHA", 1)),
    Step(88, "complete", order=6),
    Step(80, "refund-all", order=6),
    _o(61, ("COF-ETHIOPIA", 3), ("TREAT-BISCOTTI", 2), points=500),
    Step(57, "complete", order=7),
    Step(40, "redeem", reward="tea-taster"),
    _o(39, ("TEA-JASMINE", 1), reward="tea-taster"),
    Step(35, "complete", order=8),
    Step(30, "redeem", reward="five-off"),
    _o(9, ("COF-COLOMBIA", 1), ("WARE-MUG", 1)),
    _o(2, ("TEA-SENCHA", 1), ("TEA-EARLGREY", 2), ("TREAT-CHOC", 1)),
    _o(0.02, ("COF-ESPRESSO", 1), ("TREAT-BISCOTTI", 1), pay=False),
]

#: Other members: name, email, birthday (month, day), who referred them, their year.
OTHER_MEMBERS = [
    # Li Wei joined nearly a year ago: his welcome points expire soon (a reminder).
    ("Li Wei", "li.wei@example.com", (0, 0), DEMO_MEMBER[1], [
        _o(340, ("TEA-JASMINE", 2)), Step(336, "complete", order=0),
        Step(250, "review", (("TEA-JASMINE", 5),), text="The pearls open beautifully. Worth every cent."),
        _o(180, ("TEA-SENCHA", 3), ("WARE-MUG", 1)), Step(176, "complete", order=1),
        _o(45, ("TEA-ROOIBOS", 1), ("TREAT-CHOC", 2)), Step(41, "complete", order=2),
        _o(5, ("TEA-EARLGREY", 2)),
    ]),
    ("Noor Haddad", "noor@example.com", (2, 29), DEMO_MEMBER[1], [
        _o(200, ("WARE-DRIPPER", 1), ("COF-ETHIOPIA", 1)), Step(195, "complete", order=0),
        _o(100, ("COF-ESPRESSO", 4)), Step(97, "cancel", order=1),
        Step(60, "review", (("TEA-SENCHA", 3),), text="Tried a friend's tin: a bit grassy for me."),
        _o(20, ("COF-COLOMBIA", 2), ("TREAT-BISCOTTI", 1)), Step(16, "complete", order=2),
        Step(12, "refund-line", items=(("TREAT-BISCOTTI", 1),), order=2),
    ]),
    # Referred by Dana: a first order still in its return window...
    ("Omar Farouk", "omar@example.com", (7, 14), DEMO_MEMBER[1], [_o(4, ("WARE-TEAPOT", 1))]),
    # ... a first order refunded, so nobody earns the referral bonus...
    ("Priya Shah", "priya@example.com", (11, 3), DEMO_MEMBER[1], [
        _o(40, ("COF-ETHIOPIA", 2)), Step(30, "refund-all", order=0),
    ]),
    # ... and no order yet.
    ("Kai Jensen", "kai@example.com", (0, 0), DEMO_MEMBER[1], [Step(1, "none")]),
]  # fmt: skip

#: Dana's birthday is in a few days; (0, 0) is "today", for the birthday job.
DEMO_BIRTHDAY = (0, 3)


@contextlib.contextmanager
def _clock_at(when: dt.datetime) -> t.Iterator[None]:
    """Run the extension's services as if it were ``when``."""
    saved = loyalty.clock
    loyalty.clock = lambda: when
    try:
        yield
    finally:
        loyalty.clock = saved


def _live(member: t.Any, steps: t.Sequence[Step], now: dt.datetime) -> None:
    """Replay a member's year: orders through the shop's checkout, then their lifecycle."""
    placed: list[t.Any] = []
    codes: dict[str, str] = {}
    products = {p.sku: p for p in db.session.scalars(sa.select(Product))}
    for n, step in enumerate(steps):
        when = now - dt.timedelta(days=step.days)
        with _clock_at(when):
            if step.action == "order":
                for sku, quantity in step.items:
                    add_to_cart(member, products[sku], quantity)
                order = place_order(
                    member, shipping=step.shipping, coupon_code=codes.pop(step.reward, ""), points=step.points
                )
                order.created_at = when
                db.session.commit()
                if step.pay:
                    pay(order)
                placed.append(order)
            elif step.action == "redeem":
                codes[step.reward] = rewards.redeem_reward(member, step.reward, key=f"demo-{n}").code
            elif step.action == "review":
                ((sku, rating),) = step.items
                write_review(member, products[sku], rating, step.text)
            elif step.action == "none":
                pass
            elif step.action == "refund-line":
                loyalty_orders.order_refunded(placed[step.order], key=f"RMA-{n}", lines=dict(step.items))
            else:
                target = placed[step.order]
                if step.action == "complete":
                    details = fulfilment(target)
                    if details is not None:
                        details.shipped_at = when - dt.timedelta(days=2)
                status = {"complete": "completed", "refund-all": "refunded", "cancel": "cancelled"}
                set_status(target, status[step.action])


def seed(now: dt.datetime | None = None) -> dict[str, int]:
    """Fill an empty database with the demo data; returns what was made."""
    now = now or utcnow()
    year_ago = now - dt.timedelta(days=365)
    for slug, name, description, products in CATALOGUE:
        category = Category(slug=slug, name=name, description=description)
        db.session.add(category)
        for sku, title, price_minor, colour, text in products:
            db.session.add(
                Product(
                    sku=sku,
                    name=title,
                    price_minor=price_minor,
                    colour=colour,
                    description=text,
                    category=category,
                )
            )
    # A running campaign: double points on tea for two weeks.
    db.session.add(
        loyalty.models.Campaign(
            name="Tea fortnight: double points on tea",
            multiplier="2",
            categories="tea",
            starts_at=now - dt.timedelta(days=3),
            ends_at=now + dt.timedelta(days=11),
        )
    )
    db.session.commit()
    with _clock_at(year_ago):
        for reward in REWARDS:
            rewards.create_reward(**reward)
    made = {"products": sum(len(c[3]) for c in CATALOGUE), "rewards": len(REWARDS), "members": 0}
    with _clock_at(year_ago - dt.timedelta(days=30)):
        name, email, password = OWNER
        members.enroll(name=name, email=email, password=password)
    people = [(DEMO_MEMBER[0], DEMO_MEMBER[1], DEMO_MEMBER[2], DEMO_BIRTHDAY, None, DEMO_HISTORY)]
    people += [
        (name, email, "member-password", born, by, steps) for name, email, born, by, steps in OTHER_MEMBERS
    ]
    codes: dict[str, str] = {}
    for name, email, password, born, referred_by, steps in people:
        joined = now - dt.timedelta(days=max(s.days for s in steps) + 5)
        with _clock_at(joined):
            # The "signup" action of LOYALTY_ACTIONS gives the welcome points.
            member = members.enroll(name=name, email=email, password=password, birthday=_birthday(now, *born))
            codes[email] = referrals.referral_code(member)
            if referred_by:
                referrals.refer(member, codes[referred_by])
        _live(member, steps, now)
        made["members"] += 1
    # What cron would have done meanwhile.
    jobs.expire_points(now=now)
    jobs.release_pending(now=now)
    referrals.settle_referrals(now=now)
    actions.award_birthdays(now=now)
    reminders.remind(now=now)
    made["orders"] = db.session.scalar(sa.select(sa.func.count()).select_from(loyalty.models.Order)) or 0
    return made


def _birthday(now: dt.datetime, month: int, day: int) -> dt.date:
    """A birthday: ``(0, n)`` is ``n`` days after ``now``'s date (born in 1988, a leap year)."""
    if month == 0:
        return (now.date() + dt.timedelta(days=day)).replace(year=1988)
    return dt.date(1992, month, day)


def is_empty() -> bool:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Product)) == 0


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Drop the shop's tables and fill them with the demo data again."""
    db.drop_all()
    db.create_all()
    made = seed()
    click.echo(
        f"Demo data: {made['products']} products, {made['rewards']} rewards, {made['members']} members"
        f" with {made['orders']} orders. Log in as {DEMO_MEMBER[1]} / {DEMO_MEMBER[2]}"
        f" (the shop owner: {OWNER[1]} / {OWNER[2]})."
    )


def init_app(app: Flask) -> None:
    """Create missing tables, fill an empty database (``SHOP_DEMO_DATA``), add ``flask seed``."""
    app.cli.add_command(seed_command)
    with app.app_context():
        db.create_all()
        if app.config["SHOP_DEMO_DATA"] and is_empty():
            seed()
