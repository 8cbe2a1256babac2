"""The member pages: a blueprint built by :func:`create_blueprint`.

:meth:`~flask_loyalty.Loyalty.init_app` registers it unless
``LOYALTY_BLUEPRINT_ENABLED`` is false, named ``LOYALTY_BLUEPRINT_NAME`` and
mounted at ``LOYALTY_URL_PREFIX``. Every page needs a logged-in user
(Flask-Login): an anonymous visitor is sent to the host's
``login_manager.login_view``, or gets 401 when there is none. The views are
thin: they read the request, call one service and render plain data; the
templates run no queries. See ``docs/pages.rst``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import typing as t

from flask import abort
from flask import Blueprint
from flask import current_app
from flask import flash
from flask import Flask
from flask import g
from flask import render_template
from flask import request
from flask import url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from . import checkout
from . import history as ledger_history
from . import members
from . import rewards
from . import tiers
from .checkout_widget import build_widget
from .checkout_widget import current_checkout
from .config import config_value
from .error_messages import describe
from .error_messages import limits_message
from .error_messages import unavailable_message
from .errors import InvalidRequest
from .errors import LoyaltyError
from .forms import ApplyPointsForm
from .forms import CancelRedemptionForm
from .forms import HistoryFilterForm
from .forms import RedeemForm
from .forms import RemovePointsForm
from .i18n import format_currency
from .i18n import format_number
from .i18n import gettext as _
from .redirects import redirect_next
from .redirects import safe_next
from .referral_panel import referral_panel
from .templating import page_context
from .templating import tier_progress

__all__ = ["create_blueprint", "CatalogueItem"]

#: Entries on the dashboard's recent activity.
RECENT_ENTRIES = 5
#: Expiry dates on the dashboard's expiry schedule.
EXPIRY_DATES = 10

Page: t.TypeAlias = str | tuple[str, int] | Response


@dataclasses.dataclass(frozen=True)
class CatalogueItem:
    """A reward with whether the member can redeem it now."""

    reward: rewards.Reward
    #: Why the member cannot redeem it (translated), or ``None`` if they can.
    problem: str | None


def _require_login() -> Response | None:
    """Send anonymous visitors to the host's login view (401 without one)."""
    manager = getattr(current_app, "login_manager", None)
    if manager is None:
        abort(401)
    from flask_login import current_user

    if not current_user.is_authenticated:
        return t.cast(Response, manager.unauthorized())
    return None


def _member() -> int:
    """The member id of the logged-in user (enrolled on first visit when allowed)."""
    if "loyalty_member_id" not in g:
        from flask_login import current_user

        try:
            g.loyalty_member_id = members.member_for_user(current_user._get_current_object())
        except LoyaltyError:
            abort(403, _("Your account is not part of the loyalty programme."))
    return int(g.loyalty_member_id)


def _page(template: str, status: int = 200, **context: t.Any) -> tuple[str, int]:
    context.setdefault("errors", [])
    return render_template(f"loyalty/{template}.html", **context), status


def _form_errors(form: t.Any) -> tuple[int, list[str]]:
    """The status and messages of a form that did not validate (400 for a bad CSRF token)."""
    if "csrf_token" in form.errors:
        return 400, [_("The form has expired or was not sent by this site; reload the page and try again.")]
    return 400, [str(message) for messages in form.errors.values() for message in messages]


def _error_page(error: HTTPException) -> tuple[str, int]:
    titles = {
        400: _("The request is not valid."),
        401: _("Please log in to see this page."),
        403: _("You cannot see this page."),
        404: _("This page does not exist."),
        405: _("This page cannot be used that way."),
    }
    code = error.code or 500
    own = error.description if error.description != type(error).description else None
    return _page("error", code, error_title=titles.get(code, str(error.name)), error_message=own or "")


def _by_day(schedule: list[tuple[dt.datetime, int]]) -> list[tuple[dt.datetime, int]]:
    """One row per (UTC) day: lots that expire at different times of one day are added up."""
    days: dict[dt.date, tuple[dt.datetime, int]] = {}
    for expires_at, number in schedule:
        first, total = days.get(expires_at.date(), (expires_at, 0))
        days[expires_at.date()] = (first, total + number)
    return list(days.values())


def dashboard() -> Page:
    """Balances, tier and progress, what expires when, recent activity and referrals."""
    member = _member()
    return _page(
        "dashboard",
        balances=members.balances(member),
        tier=tier_progress(tiers.standing(member)),
        expiring=ledger_history.expiring_soon(member),
        expiry_schedule=_by_day(ledger_history.expiry_schedule(member, limit=EXPIRY_DATES)),
        recent=ledger_history.history(member, limit=RECENT_ENTRIES).entries,
        referral=referral_panel(member),
    )


def history() -> Page:
    """The member's ledger entries, newest first, by pages, filtered by kind and dates."""
    member = _member()
    form = HistoryFilterForm(formdata=request.args)
    context: dict[str, t.Any] = {"history_form": form, "entries": (), "older_url": None, "newest_url": None}
    if not form.validate():
        return _page("history", 400, errors=_form_errors(form)[1], **context)
    filters = form.filters()
    try:
        page = ledger_history.history(member, **filters)
    except InvalidRequest:
        return _page("history", 400, errors=[_("These filters are not valid.")], **context)
    context["entries"] = page.entries
    if page.next_before is not None:
        context["older_url"] = url_for(".history", before=page.next_before, **form.query())
    if filters["before"] is not None:
        context["newest_url"] = url_for(".history", **form.query())
    return _page("history", **context)


def entry(entry_id: int) -> Page:
    """One of the member's ledger entries (404 for anyone else's)."""
    member = _member()
    found = ledger_history.history(member, before=entry_id + 1, limit=1).entries if entry_id < 2**63 else ()
    if not found or found[0].id != entry_id:
        abort(404)
    return _page("entry", entry=found[0])


def catalogue() -> Page:
    """The rewards the member can redeem now, and why not for the others."""
    member = _member()
    balance = members.balances(member)
    listed = rewards.list_rewards()
    reasons = rewards.availability(member, listed)
    items = [
        CatalogueItem(reward, _problem(reward, reasons.get(reward.id), balance.available))
        for reward in listed
    ]
    return _page("rewards", items=items, balances=balance)


def _problem(reward: rewards.Reward, unavailable: t.Any, available: int) -> str | None:
    if unavailable is not None:
        return unavailable_message(unavailable.reason, reward)
    if available < reward.cost:
        return _("You need %(points)s more points.", points=format_number(reward.cost - max(available, 0)))
    return None


def _reward(slug: str) -> rewards.Reward:
    try:
        return rewards.get_reward(slug)
    except LoyaltyError:
        abort(404, _("There is no such reward."))


def _reward_page(reward: rewards.Reward, status: int = 200, **context: t.Any) -> tuple[str, int]:
    member = _member()
    balance = members.balances(member)
    problem = _problem(reward, rewards.availability(member, [reward])[reward.id], balance.available)
    form = RedeemForm(
        formdata=None, token=secrets.token_urlsafe(24), next=safe_next(request.args.get("next"))
    )
    return _page(
        "reward", status, reward=reward, problem=problem, balances=balance, redeem_form=form, **context
    )


def reward(slug: str) -> Page:
    """A reward and the form that redeems it."""
    return _reward_page(_reward(slug))


def redeem(slug: str) -> Page:
    """Redeem a reward: the first post asks for confirmation, the second redeems, once per token."""
    found = _reward(slug)
    member = _member()
    form = RedeemForm()
    if not form.validate_on_submit():
        status, errors = _form_errors(form)
        return _reward_page(found, status, errors=errors)
    if not form.confirmed:
        form.confirm.data = "yes"
        return _page("redeem_confirm", reward=found, balances=members.balances(member), redeem_form=form)
    try:
        issued = rewards.redeem_reward(member, found.id, key=form.token.data, actor=f"member:{member}")
    except LoyaltyError as error:
        status, message = describe(error, reward=found, not_found=_("There is no such reward."))
        return _reward_page(found, status, errors=[message])
    if not issued.replayed:
        flash(
            _("You redeemed %(name)s. Your code is %(code)s.", name=found.name, code=issued.code), "success"
        )
    return redirect_next(form.next.data, ".redemption", redemption_id=issued.id)


def my_rewards() -> Page:
    """The member's redemptions with their codes, status and expiry, newest first."""
    member = _member()
    cursor = request.args.get("before", "")
    if cursor and (not cursor.isdigit() or not 0 < int(cursor) < 2**63):
        return _page("my_rewards", 400, errors=[_("This page link is not valid.")], redemptions=(),
                     older_url=None, cancel_form=CancelRedemptionForm())  # fmt: skip
    size = int(config_value("PAGE_SIZE"))
    found = rewards.member_redemptions(member, limit=size + 1, before_id=int(cursor) if cursor else None)
    older = url_for(".my_rewards", before=found[size - 1].id) if len(found) > size else None
    return _page("my_rewards", redemptions=found[:size], older_url=older, cancel_form=CancelRedemptionForm())


def _redemption(member: int, redemption_id: int) -> rewards.Redemption:
    if not 0 < redemption_id < 2**63:
        abort(404, _("There is no such reward in your account."))
    try:
        return rewards.get_redemption(member, redemption_id)
    except LoyaltyError:
        abort(404, _("There is no such reward in your account."))


def redemption(redemption_id: int) -> Page:
    """One of the member's redemptions (404 for anyone else's)."""
    member = _member()
    return _page(
        "redemption", redemption=_redemption(member, redemption_id), cancel_form=CancelRedemptionForm()
    )


def cancel(redemption_id: int) -> Page:
    """Cancel an issued redemption; its points come back once."""
    member = _member()
    found = _redemption(member, redemption_id)
    form = CancelRedemptionForm()
    if not form.validate_on_submit():
        status, errors = _form_errors(form)
        return _page("redemption", status, redemption=found, cancel_form=form, errors=errors)
    try:
        cancelled = rewards.cancel_redemption(member, redemption_id, actor=f"member:{member}")
    except LoyaltyError as error:
        status, message = describe(
            error,
            not_found=_("There is no such reward in your account."),
            invalid_state=_("This reward was used or has expired; it cannot be cancelled."),
        )
        return _page("redemption", status, redemption=found, cancel_form=form, errors=[message])
    if not cancelled.replayed:
        flash(_("%(name)s was cancelled and its points returned.", name=cancelled.reward_name), "success")
    return redirect_next(form.next.data, ".my_rewards")


def _checkout(member: int, status: int = 200, **context: t.Any) -> tuple[str, int]:
    from flask_login import current_user

    order = current_checkout(current_user._get_current_object())
    widget = None
    if order is not None:
        widget = build_widget(
            member, order, next=context.pop("next", None), apply_form=context.pop("form", None)
        )
    return _page("checkout", status, loyalty_checkout=widget, **context)


def checkout_page() -> Page:
    """The checkout widget on a page of its own."""
    return _checkout(_member(), next=request.args.get("next"))


def _current_order() -> tuple[str, t.Any]:
    from flask_login import current_user

    order = current_checkout(current_user._get_current_object())
    if order is None:
        abort(404, _("There is no order to pay with points right now."))
    return order


def checkout_apply() -> Page:
    """Hold points for the current order, within the checkout limits."""
    member = _member()
    reference, payable = _current_order()
    form = ApplyPointsForm()
    if not form.validate_on_submit():
        status, errors = _form_errors(form)
        return _checkout(member, status, errors=errors, form=form, next=form.next.data)
    try:
        applied = checkout.apply_points(
            member,
            reference=reference,
            points=form.points.points,
            payable_total=payable,
            actor=f"member:{member}",
        )
    except LoyaltyError as error:
        message = None
        if isinstance(error, InvalidRequest):
            offer = checkout.offer(member, reference=reference, payable_total=payable)
            message = limits_message(offer, form.points.points)
        status, text = describe(
            error,
            invalid_request=message,
            invalid_state=_("This order was paid already; its points cannot change."),
        )
        return _checkout(member, status, errors=[text], form=form, next=form.next.data)
    flash(_("%(points)s points applied: %(discount)s off.", points=format_number(applied.points),
            discount=format_currency(applied.discount, applied.currency)), "success")  # fmt: skip
    return redirect_next(form.next.data, ".checkout")


def checkout_remove() -> Page:
    """Release the points held for the current order."""
    member = _member()
    reference, _payable = _current_order()
    form = RemovePointsForm()
    if not form.validate_on_submit():
        status, errors = _form_errors(form)
        return _checkout(member, status, errors=errors, next=form.next.data)
    try:
        checkout.remove_points(member, reference=reference, actor=f"member:{member}")
    except LoyaltyError as error:
        status, text = describe(
            error,
            not_found=_("No points are applied to this order."),
            invalid_state=_("This order was paid already; its points cannot change."),
        )
        return _checkout(member, status, errors=[text], next=form.next.data)
    flash(_("The points were removed from this order."), "success")
    return redirect_next(form.next.data, ".checkout")


#: ``(rule, endpoint, view, methods)`` of every page.
ROUTES: tuple[tuple[str, str, t.Callable[..., Page], tuple[str, ...]], ...] = (
    ("/", "dashboard", dashboard, ("GET",)),
    ("/history", "history", history, ("GET",)),
    ("/history/<int:entry_id>", "entry", entry, ("GET",)),
    ("/rewards", "rewards", catalogue, ("GET",)),
    ("/rewards/<slug>", "reward", reward, ("GET",)),
    ("/rewards/<slug>/redeem", "redeem", redeem, ("POST",)),
    ("/my-rewards", "my_rewards", my_rewards, ("GET",)),
    ("/my-rewards/<int:redemption_id>", "redemption", redemption, ("GET",)),
    ("/my-rewards/<int:redemption_id>/cancel", "cancel_redemption", cancel, ("POST",)),
    ("/checkout", "checkout", checkout_page, ("GET",)),
    ("/checkout/apply", "checkout_apply", checkout_apply, ("POST",)),
    ("/checkout/remove", "checkout_remove", checkout_remove, ("POST",)),
)


def create_blueprint(app: Flask) -> Blueprint:
    """Build the member pages' blueprint for ``app``.

    It is named ``LOYALTY_BLUEPRINT_NAME``, mounted at ``LOYALTY_URL_PREFIX``
    and finds its templates in ``templates/loyalty/`` (after the host's own
    templates folder, so a same-named host file overrides a page).
    """
    blueprint = Blueprint(
        str(config_value("BLUEPRINT_NAME", app)),
        __name__,
        url_prefix=str(config_value("URL_PREFIX", app)).rstrip("/") or None,
        template_folder="templates",
    )
    blueprint.before_request(_require_login)
    blueprint.context_processor(page_context)
    for code in (400, 401, 403, 404, 405):
        blueprint.register_error_handler(code, _error_page)
    for rule, endpoint, view, methods in ROUTES:
        blueprint.add_url_rule(rule, endpoint, view, methods=list(methods))
    return blueprint
