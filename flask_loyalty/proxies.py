"""Proxies to the extension's per-app state."""

from __future__ import annotations

import typing as t

from flask import current_app
from werkzeug.local import LocalProxy

if t.TYPE_CHECKING:
    from .extension import LoyaltyState


def get_state() -> LoyaltyState:
    """The :class:`~flask_loyalty.extension.LoyaltyState` of the current app itself.

    What :data:`current_loyalty` stands for, without the proxy's look-up on
    each attribute: for code that uses the state several times.

    :raises RuntimeError: outside an app context or if the app has no extension.
    """
    try:
        return t.cast("LoyaltyState", current_app.extensions["loyalty"])
    except KeyError:
        raise RuntimeError(
            "flask-loyalty is not initialised on this app: call Loyalty(app) or loyalty.init_app(app)."
        ) from None


#: The :class:`~flask_loyalty.extension.LoyaltyState` of the current app.
current_loyalty: LoyaltyState = t.cast("LoyaltyState", LocalProxy(get_state))
