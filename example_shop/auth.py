"""Signing up, logging in and out. The extension's ``Member`` is the user."""

from __future__ import annotations

import typing as t

import sqlalchemy as sa
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import login_required
from flask_login import login_user
from flask_login import logout_user

from flask_loyalty import InvalidRequest
from flask_loyalty import members
from flask_loyalty import NotFound
from flask_loyalty import ReferralRefused
from flask_loyalty import referrals
from flask_loyalty.redirects import redirect_next

from .extensions import db
from .extensions import login_manager
from .extensions import loyalty
from .forms import LoginForm
from .forms import SignupForm
from .templating import action_points

bp = Blueprint("auth", __name__, url_prefix="/auth")

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to see that page."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_member(member_id: str) -> t.Any:
    if not member_id.isdigit():
        return None
    return db.session.get(loyalty.models.Member, int(member_id))


#: What a member is told when their friend's referral code cannot be used.
REFUSED = {
    "self_referral": "That is your own referral code.",
    "same_email": "That referral code belongs to your own email address.",
    "same_payment": "That referral code belongs to an account that pays like yours.",
    "already_referred": "Your account was referred already.",
}


def use_referral(member: t.Any, code: str) -> None:
    """Record that ``member`` joined with a friend's ``code``; flash why not when it is refused."""
    try:
        referral = referrals.refer(member, code)
    except (NotFound, InvalidRequest):
        flash(f"The referral code {code} does not exist, so no friend will be credited for it.", "error")
    except ReferralRefused as error:
        flash(f"Referral not used: {REFUSED.get(error.reason, error.message)}", "error")
    else:
        bonus = current_app.config["LOYALTY_REFERRAL_REFEREE_BONUS"]
        minimum = current_app.config["LOYALTY_REFERRAL_MINIMUM_ORDER"]
        flash(
            f"You joined with {referral_name(referral)}'s link: your first order of ${minimum} or more"
            f" earns you {bonus:,} bonus points once it is settled.",
            "success",
        )


def referral_name(referral: referrals.Referral) -> str:
    referrer = db.session.get(loyalty.models.Member, referral.referrer_id)
    return referrer.name if referrer is not None and referrer.name else "a friend"


@bp.route("/signup", methods=("GET", "POST"))
def signup() -> t.Any:
    form = SignupForm(next=request.args.get("next", ""), ref=request.args.get("ref", "").strip().upper())
    if form.validate_on_submit():
        try:
            member = members.enroll(
                name=form.name.data,
                email=form.email.data,
                password=form.password.data,
                birthday=form.birthday.data,
            )
        except InvalidRequest as error:
            taken = "already exists" in error.message
            form.email.errors.append(
                "An account with this email exists: log in instead." if taken else error.message
            )
        else:
            login_user(member)
            welcome = action_points("signup")
            flash(f"Welcome, {member.name}! {welcome:,} points are waiting in your account.", "success")
            if form.ref.data:
                use_referral(member, form.ref.data.strip())
            return redirect_next(form.next.data, "catalogue.index")
    return render_template("shop/signup.html", form=form), 422 if form.errors else 200


@bp.route("/login", methods=("GET", "POST"))
def login() -> t.Any:
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        m = loyalty.models
        email = (form.email.data or "").strip().lower()
        member = db.session.scalars(sa.select(m.Member).where(m.Member.email == email)).first()
        if member is None or not member.check_password(form.password.data) or not member.is_active:
            form.password.errors.append("That email and password do not match an account.")
        else:
            login_user(member)
            flash(f"Welcome back, {member.name}.", "success")
            return redirect_next(form.next.data, "catalogue.index")
    return render_template("shop/login.html", form=form), 422 if form.errors else 200


@bp.post("/logout")
@login_required
def logout() -> t.Any:
    logout_user()
    flash("You have logged out.", "info")
    return redirect(url_for("catalogue.index"))
