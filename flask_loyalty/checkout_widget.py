"""The checkout widget: paying part of the current order with points, from a page.

The host tells the extension which order the logged-in member is paying with
:meth:`Loyalty.checkout_loader <flask_loyalty.Loyalty.checkout_loader>`: a
function that receives the current user and returns ``(reference,
payable_total)`` (or ``None`` when there is nothing to pay). The order
reference and the total therefore always come from the host's own code, never
from the form, and the holds are the member's own: a member can only ever
apply or remove points on their own order.

The host's checkout page shows the widget with::

    return render_template("checkout.html", loyalty_checkout=checkout_widget(next=request.path))

and ``{% include "loyalty/_checkout_widget.html" %}`` in its template.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import typing as t
from decimal import Decimal

from flask import url_for

from . import checkout
from .config import config_value
from .errors import InvalidRequest
from .forms import ApplyPointsForm
from .forms import RemovePointsForm
from .money import parse_amount
from .proxies import current_loyalty
from .redirects import safe_next

#: What a checkout loader returns: the order reference and its payable total.
CheckoutOrder: t.TypeAlias = tuple[str, Decimal | int | str]


@dataclasses.dataclass(frozen=True)
class CheckoutWidget:
    """What ``loyalty/_checkout_widget.html`` shows, as plain data."""

    #: The host's order reference.
    reference: str
    #: The order's payable total before points.
    payable: Decimal
    #: What the member may apply (:class:`~flask_loyalty.checkout.PointsOffer`).
    offer: checkout.PointsOffer
    #: The points held for the order now, or ``None``.
    applied: checkout.AppliedPoints | None
    #: The form that applies points (``points``, ``next`` and the CSRF token).
    apply_form: ApplyPointsForm
    #: The form that removes them.
    remove_form: RemovePointsForm
    #: Where the apply form posts to.
    apply_url: str
    #: Where the remove form posts to.
    remove_url: str


def current_checkout(user: t.Any) -> tuple[str, Decimal] | None:
    """The order ``user`` is paying now, from the registered checkout loader.

    :returns: ``(reference, payable_total)``, or ``None`` when no loader is
        registered or it returns ``None``.
    :raises InvalidRequest: if the loader returns something else.
    """
    loader = current_loyalty.extension.checkout_loader_hook
    if loader is None:
        return None
    found = loader(user)
    if found is None:
        return None
    if not (isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], str) and found[0]):
        raise InvalidRequest(
            f"The checkout loader must return (reference, payable_total) or None, not {found!r}."
        )
    return found[0], parse_amount(found[1])


def build_widget(
    member: t.Any,
    order: tuple[str, Decimal],
    *,
    next: str | None = None,
    apply_form: ApplyPointsForm | None = None,
) -> CheckoutWidget:
    """The widget's data for ``member`` paying ``order`` (``(reference, payable_total)``).

    :param next: where the forms send the member back to (checked by
        :func:`~flask_loyalty.redirects.safe_next`).
    :param apply_form: a submitted form to show again with its errors.
    """
    reference, payable = order
    offer = checkout.offer(member, reference=reference, payable_total=payable)
    applied = checkout.applied_points(member, reference=reference)
    back = safe_next(next)
    if apply_form is None:
        suggested = offer.applied or (offer.maximum if offer.usable else "")
        apply_form = ApplyPointsForm(formdata=None, points=str(suggested), next=back or "")
    name = config_value("BLUEPRINT_NAME")
    return CheckoutWidget(
        reference=reference,
        payable=payable,
        offer=offer,
        applied=applied,
        apply_form=apply_form,
        remove_form=RemovePointsForm(formdata=None, next=back or ""),
        apply_url=url_for(f"{name}.checkout_apply"),
        remove_url=url_for(f"{name}.checkout_remove"),
    )


def checkout_widget(*, next: str | None = None) -> CheckoutWidget | None:
    """The checkout widget of the logged-in member, for a host's checkout page.

    :param next: the page the widget's forms return to, usually
        ``request.path``.
    :returns: ``None`` for an anonymous visitor, or when the checkout loader
        says there is nothing to pay.
    """
    from flask_login import current_user

    from .members import member_for_user

    if not getattr(current_user, "is_authenticated", False):
        return None
    user = current_user._get_current_object()
    order = current_checkout(user)
    if order is None:
        return None
    return build_widget(member_for_user(user), order, next=next)
