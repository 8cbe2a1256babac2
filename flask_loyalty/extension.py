"""The :class:`Loyalty` extension object."""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing as t

import sqlalchemy as sa
from flask import current_app
from flask import Flask
from flask import has_app_context
from sqlalchemy.sql.elements import conv
from werkzeug.utils import import_string

from . import autohooks
from .config import apply_defaults
from .config import choice_value
from .config import CLAWBACK_POLICIES
from .config import config_value
from .config import decimal_setting
from .models import build_models
from .models import Models
from .store import LoyaltyStore
from .tier_config import check_config as check_tiers
from .transaction import install_sqlite_locking
from .transaction import track_host_flushes

F = t.TypeVar("F")

#: A clock returns the current time as a naive UTC datetime.
Clock = t.Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime (the default clock)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class LoyaltyState:
    """What :meth:`Loyalty.init_app` keeps in ``app.extensions["loyalty"]``."""

    #: The extension object that initialised the app.
    extension: Loyalty
    #: The store built from the app's ``db`` and models.
    store: LoyaltyStore
    #: The model classes for the app's table prefix.
    models: Models
    #: The host's user model (``LOYALTY_USER_MODEL``), or ``None``.
    user_model: type[t.Any] | None = None
    #: Whether status changes of the extension's orders run the lifecycle
    #: hooks (``LOYALTY_ORDER_EVENTS_ENABLED``).
    order_events: bool = False

    def now(self) -> dt.datetime:
        """The current time by the extension's clock (naive UTC)."""
        return self.extension.clock()

    def runs_hooks_in_transactions(self) -> bool:
        """Whether service steps call host code inside their transaction.

        Earning-rule callbacks and the tier-multiplier hook run while an
        order's points are priced, and may read through the session. While
        any is registered, service steps run in the session's transaction
        (so such reads see the step's writes and take no lock of their own);
        otherwise they run as standalone operations (see
        :meth:`~flask_loyalty.store.LoyaltyStore.atomic`).
        """
        extension = self.extension
        return bool(extension.earn_rules) or extension.tier_multiplier_hook is not None


class Loyalty:
    """The flask-loyalty extension.

    Create it once, with or without an app, and call :meth:`init_app` for each
    app (the application-factory pattern)::

        db = SQLAlchemy()
        loyalty = Loyalty(db=db)

        def create_app():
            app = Flask(__name__)
            db.init_app(app)
            loyalty.init_app(app)
            return app

    :param app: an app to initialise at once.
    :param db: the host's :class:`flask_sqlalchemy.SQLAlchemy`; the one
        registered on the app is used when omitted.
    :param clock: returns the current time as a naive UTC datetime; tests and
        simulations replace it. Defaults to the system clock.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: t.Any = None,
        clock: Clock | None = None,
    ) -> None:
        #: The host's Flask-SQLAlchemy extension, if given here.
        self.db = db
        #: The clock every service reads the time from.
        self.clock: Clock = clock or utcnow
        self._models: Models | None = None
        #: Earning-rule callbacks by name, in registration order
        #: (see :meth:`earn_rule`).
        self.earn_rules: dict[str, t.Any] = {}
        #: The tier-multiplier hook (see :meth:`tier_multiplier`), if any.
        self.tier_multiplier_hook: t.Callable[[str | None, int | None], t.Any] | None = None
        #: The order adapter (see :meth:`order_adapter`), if any.
        self.order_adapter_object: t.Any = None
        #: The checkout loader (see :meth:`checkout_loader`), if any.
        self.checkout_loader_hook: t.Callable[[t.Any], t.Any] | None = None
        #: Actions registered with :meth:`register_action`, by name.
        self.actions: dict[str, t.Any] = {}
        #: The expiry-reminder hook (see :meth:`reminder_sender`), if any.
        self.reminder_sender_hook: t.Callable[..., t.Any] | None = None
        if app is not None:
            self.init_app(app)

    def _register(self, slot: str, name: str | None, f: F) -> F:
        if slot == "earn_rules":
            key = str(name or getattr(f, "__name__", repr(f)))
            if key in self.earn_rules:
                raise ValueError(f"An earning rule named {key!r} is already registered.")
            self.earn_rules[key] = f
        else:
            setattr(self, slot, f)
        return f

    @t.overload
    def earn_rule(self, f: F, /) -> F: ...
    @t.overload
    def earn_rule(self, f: None = None, /, *, name: str | None = None) -> t.Callable[[F], F]: ...
    def earn_rule(self, f: F | None = None, /, *, name: str | None = None) -> F | t.Callable[[F], F]:
        """Register an earning-rule callback; use as ``@loyalty.earn_rule``.

        The callback receives a read-only
        :class:`~flask_loyalty.rules.OrderContext` and the
        :class:`~flask_loyalty.rules.Quote` so far, and returns an
        :class:`~flask_loyalty.rules.Award` (add points, multiply, or veto,
        with an explanation) or ``None``. Callbacks run after the built-in
        rules, in registration order.

        :param name: the rule's name in quote breakdowns; the function's name
            by default. Names are unique.
        """
        if f is not None:
            return self._register("earn_rules", name, f)
        return lambda g: self._register("earn_rules", name, g)

    def tier_multiplier(self, f: F) -> F:
        """Register the hook that gives a tier's earning multiplier.

        It receives the tier name (or ``None``) and the member id (or
        ``None`` for an anonymous quote) and returns a number; without it,
        ``LOYALTY_TIERS`` gives the multiplier.
        """
        return self._register("tier_multiplier_hook", None, f)

    def order_adapter(self, adapter: F) -> F:
        """Register what reads the host's orders.

        Either an object with a ``read(order)`` method returning
        :class:`~flask_loyalty.adapters.OrderData` (such as
        :class:`~flask_loyalty.adapters.AttributeOrderAdapter`), or a
        callable ``order -> OrderData``. The extension's own ``Order`` model
        needs none.
        """
        return self._register("order_adapter_object", None, adapter)

    def checkout_loader(self, f: F) -> F:
        """Register what tells the checkout widget which order the user is paying.

        It receives the logged-in user and returns ``(reference,
        payable_total)`` for the order being checked out, or ``None`` when
        there is none; see :mod:`flask_loyalty.checkout_widget`.

        .. versionadded:: 0.1
        """
        return self._register("checkout_loader_hook", None, f)

    def register_action(
        self, name: str, *, points: int, cap: int | None = None, per: str | None = None
    ) -> None:
        """Register an action that earns ``points`` (see :mod:`flask_loyalty.actions`).

        Award it with :func:`flask_loyalty.actions.award`. A registered action
        replaces a ``LOYALTY_ACTIONS`` entry of the same name.

        :param cap: at most this many awards per ``per`` for one member.
        :param per: ``"day"``, ``"week"``, ``"month"`` or ``"year"``.
        :raises ValueError: for a malformed action.
        """
        from .actions import Action

        self.actions[name] = Action(name, points, cap, per)

    def reminder_sender(self, f: F) -> F:
        """Register the hook that tells a member their points expire soon.

        ``flask loyalty remind`` calls it once per member and window, after
        the reminder was recorded, with ``member_id``, ``window_days``,
        ``points`` and ``expires_at`` keyword arguments (send an email, say).
        The :data:`~flask_loyalty.signals.points_expiring` signal is sent too.
        """
        return self._register("reminder_sender_hook", None, f)

    def init_app(self, app: Flask) -> None:
        """Register the extension on ``app``.

        Applies the ``LOYALTY_*`` defaults, builds the models for
        ``LOYALTY_TABLE_PREFIX`` and adds their tables to the host's metadata
        (so ``db.create_all()`` creates them), prepares SQLite engines for
        write locking, and attaches the ``flask loyalty`` commands. It
        imports ``LOYALTY_USER_MODEL`` and registers the session listeners of
        :mod:`~flask_loyalty.autohooks` (with ``LOYALTY_ORDER_EVENTS_ENABLED``,
        status changes of the extension's orders run the lifecycle hooks).

        :raises RuntimeError: if the app already has the extension, or has no
            Flask-SQLAlchemy extension.
        :raises KeyError: on an unknown ``LOYALTY_*`` configuration key.
        :raises ValueError: on an invalid configuration value.
        """
        if "loyalty" in app.extensions:
            raise RuntimeError("flask-loyalty is already registered on this app.")
        registered = app.extensions.get("sqlalchemy")
        db = self.db if self.db is not None else registered
        # Checked before anything is registered, so that a failed call can be retried.
        if registered is None or db is not registered:
            raise RuntimeError(
                "flask-loyalty needs Flask-SQLAlchemy on the app: call db.init_app(app) before"
                " loyalty.init_app(app), with the same db as Loyalty(db=...)."
            )
        apply_defaults(app)
        _check_config(app)
        user_model = _user_model(app)
        models = build_models(config_value("TABLE_PREFIX", app))
        _attach_tables(db.metadata, models.metadata)
        if self._models is None:
            self._models = models
        order_events = bool(config_value("ORDER_EVENTS_ENABLED", app))
        app.extensions["loyalty"] = LoyaltyState(
            self, LoyaltyStore(db, models), models, user_model, order_events
        )
        track_host_flushes(db.session.session_factory.class_)
        autohooks.install(db.session.session_factory.class_, models.Order if order_events else None)
        if config_value("SQLITE_IMMEDIATE_ENABLED", app):
            with app.app_context():
                for engine in db.engines.values():
                    install_sqlite_locking(engine)
        group = config_value("CLI_GROUP", app)
        if group:
            from .cli import loyalty_cli

            app.cli.add_command(loyalty_cli, group)
        from . import templating

        templating.install(app)
        if config_value("BLUEPRINT_ENABLED", app):
            from .views import create_blueprint

            app.register_blueprint(create_blueprint(app))
        if config_value("API_ENABLED", app):
            from .api import create_api_blueprint

            app.register_blueprint(create_api_blueprint(app))

    @property
    def models(self) -> Models:
        """The model classes of the current app (or of the first app initialised).

        :raises RuntimeError: before any app is initialised.
        """
        if has_app_context():
            state = current_app.extensions.get("loyalty")
            if state is not None and state.extension is self:
                return t.cast(Models, state.models)
        if self._models is None:
            raise RuntimeError("No app has been initialised with this Loyalty object yet.")
        return self._models


def _check_config(app: Flask) -> None:
    choice_value("CLAWBACK_POLICY", CLAWBACK_POLICIES, app)
    code = config_value("CURRENCY", app)
    if not (isinstance(code, str) and len(code) == 3 and code.isalpha()):
        raise ValueError(f"LOYALTY_CURRENCY must be an ISO 4217 code such as 'USD', not {code!r}.")
    optional = ("CURRENCY_DECIMALS", "POINTS_EXPIRY_DAYS", "RESERVATION_TTL")
    for key, least in (
        ("LOCK_RETRIES", 0),
        ("JOB_CHUNK_SIZE", 1),
        ("CURRENCY_DECIMALS", 0),
        ("PENDING_DAYS", 0),
        ("POINTS_EXPIRY_DAYS", 1),
        ("REDEEM_MINIMUM", 1),
        ("REDEEM_STEP", 1),
        ("RESERVATION_TTL", 1),
        ("PAGE_SIZE", 1),
        ("EXPIRING_SOON_DAYS", 1),
    ):
        value = config_value(key, app)
        if key in optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            rule = f"a whole number of at least {least}"
            if key in optional:
                rule = f"None or {rule}"
            raise ValueError(f"LOYALTY_{key} must be {rule}, not {value!r}.")
    delay = config_value("LOCK_RETRY_DELAY", app)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < float("inf"):
        raise ValueError(
            f"LOYALTY_LOCK_RETRY_DELAY must be a finite number of seconds of at least 0, not {delay!r}."
        )
    if config_value("PAGE_SIZE", app) > 500:
        raise ValueError(f"LOYALTY_PAGE_SIZE must be at most 500, not {config_value('PAGE_SIZE', app)!r}.")
    value = config_value("POINT_VALUE", app)
    if decimal_setting(value, "LOYALTY_POINT_VALUE") == 0:
        raise ValueError(f"LOYALTY_POINT_VALUE must be greater than 0, not {value!r}.")
    share = config_value("REDEEM_MAX_SHARE", app)
    if decimal_setting(share, "LOYALTY_REDEEM_MAX_SHARE") > 1:
        raise ValueError(f"LOYALTY_REDEEM_MAX_SHARE must be between 0 and 1, not {share!r}.")
    for key in ("URL_PREFIX", "API_URL_PREFIX"):
        prefix = config_value(key, app)
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"LOYALTY_{key} must be a path starting with '/', not {prefix!r}.")
    _check_growth(app)
    from .earning import configured_rules

    with app.app_context():
        # The earning keys (rate, rounding, basis, multipliers, campaigns...):
        # building the rules checks each one.
        configured_rules()
    check_tiers(app)


def _user_model(app: Flask) -> type[t.Any] | None:
    """The class named by ``LOYALTY_USER_MODEL`` (a class or an import string).

    :raises ValueError: if it cannot be imported or is not a class.
    """
    value = config_value("USER_MODEL", app)
    if value is None or isinstance(value, type):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            "LOYALTY_USER_MODEL must be a class or an import string such as"
            f" 'shop.models:User', not {value!r}."
        )
    try:
        found = import_string(value.strip())
    except ImportError as error:
        raise ValueError(f"LOYALTY_USER_MODEL {value!r} cannot be imported: {error}") from None
    if not isinstance(found, type):
        raise ValueError(f"LOYALTY_USER_MODEL {value!r} is not a class but {found!r}.")
    return found


def _attach_tables(target: sa.MetaData, source: sa.MetaData) -> None:
    """Copy the extension's tables into the host's metadata.

    ``db.create_all()`` then creates them, and Alembic autogenerate in the
    host's project sees them as known tables (it would otherwise offer to drop
    them). The copies keep the extension's constraint and index names.

    :raises RuntimeError: if a host table has the name of one of the tables;
        nothing is copied then.
    """
    clashes = [
        table.key
        for table in source.sorted_tables
        if table.key in target.tables and not target.tables[table.key].info.get("flask_loyalty")
    ]
    if clashes:
        raise RuntimeError(
            f"The host already defines a table named {clashes[0]!r}: set LOYALTY_TABLE_PREFIX"
            " to a prefix that no host table uses."
        )
    for table in source.sorted_tables:
        if table.key not in target.tables:
            copy = table.to_metadata(target)
            copy.info["flask_loyalty"] = True
            _keep_names(table, copy)


def _keep_names(source: sa.Table, copy: sa.Table) -> None:
    """Give the copy's unique constraints and indexes the names they have in ``source``.

    ``Table.to_metadata`` rebuilds the ones made by ``unique=True`` and
    ``index=True`` on a column instead of copying them, so the host metadata's
    naming convention (or its lack of one) would name them otherwise, and
    ``create_all`` would disagree with the shipped migrations.
    """
    names: dict[tuple[t.Any, ...], t.Any] = {}
    for item in [*source.constraints, *source.indexes]:
        if isinstance(item, sa.UniqueConstraint | sa.Index):
            names[_shape(item)] = item.name
    for item in [*copy.constraints, *copy.indexes]:
        if isinstance(item, sa.UniqueConstraint | sa.Index) and names.get(_shape(item)) is not None:
            item.name = conv(names[_shape(item)])


def _shape(item: sa.UniqueConstraint | sa.Index) -> tuple[t.Any, ...]:
    unique = item.unique if isinstance(item, sa.Index) else True
    return (type(item), unique, tuple(column.name for column in item.columns))


def _check_growth(app: Flask) -> None:
    """Check the keys of action points, referrals and reminders."""
    from .actions import configured_actions
    from .actions import PERIODS

    configured_actions(app)
    for key in ("REFERRAL_REFEREE_BONUS", "REFERRAL_REFERRER_BONUS"):
        value = config_value(key, app)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
            raise ValueError(f"LOYALTY_{key} must be a whole number of points from 0, not {value!r}.")
    decimal_setting(config_value("REFERRAL_MINIMUM_ORDER", app), "LOYALTY_REFERRAL_MINIMUM_ORDER")
    cap = config_value("REFERRAL_CAP", app)
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValueError(f"LOYALTY_REFERRAL_CAP must be None or a whole number of at least 1, not {cap!r}.")
    choice_value("REFERRAL_CAP_PERIOD", PERIODS, app)
    windows = config_value("REMINDER_WINDOWS", app)
    if not isinstance(windows, list | tuple) or not all(
        isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 3650 for w in windows
    ):
        raise ValueError(f"LOYALTY_REMINDER_WINDOWS must be a list of days from 1 to 3650, not {windows!r}.")
