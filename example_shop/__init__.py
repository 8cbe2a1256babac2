"""Leaf & Bean: a small tea and coffee shop built on flask-loyalty.

Run it with ``flask --app example_shop run``: the first run creates an SQLite
database in the instance folder and fills it with demo data.
"""

from __future__ import annotations

import os
import typing as t

from flask import Flask

from .extensions import csrf
from .extensions import db
from .extensions import login_manager
from .extensions import loyalty

#: Loyalty tiers by points earned in the last twelve months.
TIERS = [
    {"name": "Bronze", "threshold": 0, "benefits": "10 points for every dollar."},
    {"name": "Silver", "threshold": 2000, "multiplier": "1.25", "benefits": "25% more points."},
    {"name": "Gold", "threshold": 8000, "multiplier": "1.5", "benefits": "50% more points, Gold rewards."},
]


def create_app(test_config: dict[str, t.Any] | None = None) -> Flask:
    """Create and configure the shop.

    :param test_config: settings that replace ``instance/config.py`` (tests).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        SQLALCHEMY_DATABASE_URI="sqlite:///" + os.path.join(app.instance_path, "shop.sqlite"),
        SHOP_NAME="Leaf & Bean",
        # Members with these emails see the shop owner's pages.
        SHOP_ADMIN_EMAILS=["owner@example.com"],
        # Fill an empty database with the demo catalogue, members and orders.
        SHOP_DEMO_DATA=True,
        LOYALTY_CURRENCY="USD",
        LOYALTY_PENDING_DAYS=14,  # the return window
        LOYALTY_POINTS_EXPIRY_DAYS=365,
        LOYALTY_TIERS=TIERS,
        LOYALTY_TIER_PERIOD="rolling_12_months",
        # The member pages wear the shop's layout.
        LOYALTY_BASE_TEMPLATE="shop/base.html",
        # Points for joining, birthdays and reviews of things bought (at most three a week).
        LOYALTY_ACTIONS={
            "signup": {"points": 500},
            "birthday": {"points": 250},
            "review": {"points": 50, "cap": 3, "per": "week"},
        },
        # Bring a friend: both earn once the friend's first order of $20 or more is settled.
        LOYALTY_REFERRAL_REFEREE_BONUS=300,
        LOYALTY_REFERRAL_REFERRER_BONUS=500,
        LOYALTY_REFERRAL_MINIMUM_ORDER="20.00",
        LOYALTY_REFERRAL_CAP=5,
        LOYALTY_REFERRAL_CAP_PERIOD="month",
        # The share link on the member's dashboard goes to the shop's sign-up page.
        LOYALTY_REFERRAL_SIGNUP_URL="auth.signup",
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.from_mapping(test_config)
    os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    loyalty.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)

    from . import admin
    from . import auth
    from . import cart
    from . import catalogue
    from . import checkout
    from . import demo
    from . import growth
    from . import orders
    from . import reviews
    from . import templating

    for module in (auth, catalogue, reviews, cart, checkout, orders, admin, growth):
        app.register_blueprint(module.bp)
    templating.init_app(app)
    demo.init_app(app)
    return app
