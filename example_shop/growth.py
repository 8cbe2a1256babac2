"""The owner's page for the growth features: reminders sent, referrals, and the daily jobs.

The shop registers :meth:`Loyalty.reminder_sender
<flask_loyalty.Loyalty.reminder_sender>`: a real shop would send an email;
this one logs the reminder and keeps it in ``shop_sent_reminder`` for the
owner's page. The page's button runs what cron would run daily:
:func:`flask_loyalty.reminders.remind`,
:func:`flask_loyalty.referrals.settle_referrals` and
:func:`flask_loyalty.actions.award_birthdays`.
"""

from __future__ import annotations

import datetime as dt
import typing as t

import sqlalchemy as sa
from flask import abort
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for

from flask_loyalty import actions
from flask_loyalty import referrals
from flask_loyalty import reminders

from .admin import admin_required
from .extensions import db
from .extensions import loyalty
from .forms import ActionForm
from .models import SentReminder

bp = Blueprint("growth", __name__, url_prefix="/admin/growth")

#: Rows shown of each list.
SHOWN = 50


@loyalty.reminder_sender
def log_reminder(
    member_id: int, window_days: int, points: int, expires_at: dt.datetime, **extra: t.Any
) -> None:
    """ "Send" an expiry reminder: log it and keep it for the owner's page."""
    member = db.session.get(loyalty.models.Member, member_id)
    email = member.email if member is not None and member.email else ""
    db.session.add(SentReminder(member_id=member_id, email=email, window_days=window_days, points=points,
                                expires_at=expires_at, sent_at=loyalty.clock()))  # fmt: skip
    db.session.commit()
    current_app.logger.info(
        "Reminder to %s: %s points expire on %s (%s-day notice).",
        email,
        points,
        expires_at.date(),
        window_days,
    )


@bp.get("/")
@admin_required
def index() -> str:
    sent = db.session.scalars(sa.select(SentReminder).order_by(SentReminder.id.desc()).limit(SHOWN)).all()
    found = referrals.list_referrals(limit=SHOWN)
    m = loyalty.models
    ids = {r.referrer_id for r in found}
    rows = db.session.execute(sa.select(m.Member.id, m.Member.name).where(m.Member.id.in_(ids)))
    names = {member_id: name for member_id, name in rows}
    return render_template(
        "shop/admin/growth.html", reminders=sent, referrals=found, referrer_names=names, form=ActionForm()
    )


@bp.post("/run")
@admin_required
def run_jobs() -> t.Any:
    if not ActionForm().validate_on_submit():
        abort(400)
    sent = reminders.remind()
    decided = referrals.settle_referrals()
    birthdays = actions.award_birthdays()
    flash(
        f"Daily jobs done: {len(sent)} reminder(s) sent; referrals {decided['rewarded']} rewarded,"
        f" {decided['capped']} capped, {decided['rejected']} rejected; {birthdays} birthday bonus(es).",
        "success",
    )
    return redirect(url_for("growth.index"))
