"""The dashboard's referral section: the member's code and share link, and their referrals.

:func:`referral_panel` reads everything the section shows and returns plain,
translated data (:class:`ReferralPanel`), so that the template runs no
queries. The share link goes to the host's signup page, named by
``LOYALTY_REFERRAL_SIGNUP_URL``, with ``?ref=CODE`` added.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t
from urllib.parse import parse_qsl
from urllib.parse import urlencode
from urllib.parse import urljoin
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from flask import request
from flask import url_for
from werkzeug.routing import BuildError

from . import referrals
from .config import config_value
from .i18n import format_currency
from .i18n import format_number
from .i18n import gettext as _
from .i18n import lazy_gettext as _l
from .i18n import ngettext
from .money import parse_amount

__all__ = ["ReferralPanel", "ReferralRow", "referral_panel", "share_url", "REFERRALS_SHOWN"]

#: The most referrals the dashboard lists (the newest).
REFERRALS_SHOWN = 20

#: Translated names of referral statuses.
REFERRAL_STATUS_LABELS = {
    "pending": _l("Pending"),
    "rewarded": _l("Rewarded"),
    "capped": _l("Limit reached"),
    "rejected": _l("Not rewarded"),
}


@dataclasses.dataclass(frozen=True)
class ReferralRow:
    """One referral, ready to show."""

    #: The referee's name (for the referrer), or ``""``.
    name: str
    #: ``pending``, ``rewarded``, ``capped`` or ``rejected``.
    status: str
    #: The status, translated.
    status_label: str
    #: What the status means for the member reading it, translated.
    note: str
    created_at: dt.datetime
    decided_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class ReferralPanel:
    """What the dashboard's referral section shows."""

    #: The member's referral code.
    code: str
    #: The absolute share link, or ``None`` when ``LOYALTY_REFERRAL_SIGNUP_URL`` is not set.
    share_url: str | None
    #: How the programme works, translated (the bonuses and the qualifying order).
    terms: str
    #: The referrals the member made, newest first (at most :data:`REFERRALS_SHOWN`).
    made: list[ReferralRow]
    #: The referral that brought the member, or ``None``.
    own: ReferralRow | None


def _with_ref(url: str, code: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "ref"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("ref", code)])))


def share_url(code: str) -> str | None:
    """The absolute signup link carrying ``code``, from ``LOYALTY_REFERRAL_SIGNUP_URL``.

    The setting is an absolute URL, a path (joined to the request's host) or
    an endpoint name (built with :func:`~flask.url_for`).

    :returns: ``None`` when the setting is ``None``.
    :raises ValueError: when the setting is an endpoint that does not exist.
    """
    target = config_value("REFERRAL_SIGNUP_URL")
    if target is None:
        return None
    target = str(target)
    if target.startswith(("http://", "https://")):
        return _with_ref(target, code)
    if target.startswith("/"):
        return _with_ref(urljoin(request.host_url, target), code)
    try:
        return url_for(target, ref=code, _external=True)
    except BuildError:
        raise ValueError(
            f"LOYALTY_REFERRAL_SIGNUP_URL is {target!r}: not a URL, a path or the name of an endpoint."
        ) from None


def _points(number: int) -> str:
    return ngettext("%(num)s point", "%(num)s points", number, num=format_number(number))


def _terms() -> str:
    friend = int(config_value("REFERRAL_REFEREE_BONUS"))
    mine = int(config_value("REFERRAL_REFERRER_BONUS"))
    minimum = parse_amount(str(config_value("REFERRAL_MINIMUM_ORDER")))
    if minimum > 0:
        order = _("When a friend who signs up with your link pays a first order of at least %(amount)s",
                  amount=format_currency(minimum, str(config_value("CURRENCY"))))  # fmt: skip
    else:
        order = _("When a friend who signs up with your link pays a first order")
    if friend and mine:
        return _("%(order)s, they earn %(friend)s and you earn %(mine)s.",
                 order=order, friend=_points(friend), mine=_points(mine))  # fmt: skip
    if mine:
        return _("%(order)s, you earn %(mine)s.", order=order, mine=_points(mine))
    if friend:
        return _("%(order)s, they earn %(friend)s.", order=order, friend=_points(friend))
    return _("Share your link with friends who would like to join.")


def _cap_note() -> str:
    cap = config_value("REFERRAL_CAP")
    periods = {"day": _("a day"), "week": _("a week"), "month": _("a month"), "year": _("a year")}
    if cap is None:
        return _("Not rewarded: the limit of rewarded referrals was reached.")
    return ngettext(
        "Not rewarded: you had reached the limit of %(num)s rewarded referral %(period)s.",
        "Not rewarded: you had reached the limit of %(num)s rewarded referrals %(period)s.",
        int(cap),
        num=format_number(int(cap)),
        period=periods.get(str(config_value("REFERRAL_CAP_PERIOD")), ""),
    )


def _note(referral: referrals.Referral, *, mine: bool) -> str:
    """What the status means: ``mine`` for the referrer, else for the referee."""
    if referral.status == "pending":
        if mine:
            return _("Waiting for their first order to be paid and settled.")
        return _("Your welcome bonus comes once your first order is paid and settled.")
    if referral.status == "rewarded":
        return _("You both earned your bonus.") if mine else _("You earned your welcome bonus.")
    if referral.status == "capped":
        return _cap_note() if mine else _("You earned your welcome bonus.")
    if referral.reason == "order_refunded":
        return _("Not rewarded: the first order was refunded or cancelled.")
    if referral.reason == "same_payment":
        return _("Not rewarded: both accounts paid with the same payment method.")
    return _("Not rewarded.")


def _row(referral: referrals.Referral, *, mine: bool) -> ReferralRow:
    label = REFERRAL_STATUS_LABELS.get(referral.status)
    return ReferralRow(
        name=referral.referee_name if mine else "",
        status=referral.status,
        status_label=str(label) if label is not None else referral.status,
        note=_note(referral, mine=mine),
        created_at=referral.created_at,
        decided_at=referral.decided_at,
    )


def referral_panel(member: t.Any) -> ReferralPanel:
    """Everything the dashboard's referral section shows for ``member``."""
    code = referrals.referral_code(member)
    made = referrals.referrals_by(member, limit=REFERRALS_SHOWN)
    own = referrals.referral_of(member)
    return ReferralPanel(
        code=code,
        share_url=share_url(code),
        terms=_terms(),
        made=[_row(referral, mine=True) for referral in made],
        own=None if own is None else _row(own, mine=False),
    )
