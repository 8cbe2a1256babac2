"""Translations and locale-aware formatting, with or without Flask-Babel.

The extension's messages live in its own catalogues
(``flask_loyalty/translations/<locale>/LC_MESSAGES/messages.mo``), which are
read with the standard library's :mod:`gettext`, so they never mix with the
host's own ``messages`` domain. Which locale a request gets:

- with Flask-Babel installed and initialised on the app, the locale that
  ``flask_babel.get_locale()`` returns (the host's ``locale_selector`` or
  ``BABEL_DEFAULT_LOCALE``);
- otherwise the best match of the request's ``Accept-Language`` header among
  the shipped languages, and English outside a request.

Any Chinese tag other than a Traditional one (``zh-TW``, ``zh-HK``, ``zh-MO``,
``zh-Hant``) selects the Simplified Chinese catalogue (``zh_CN``).

Numbers, money and dates are formatted for the locale with Babel when it is
installed (through Flask-Babel, and so in the host's time zone, when that is
initialised), and in a plain locale-neutral form otherwise.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import gettext as stdlib_gettext
import importlib.util
import os
import typing as t
from decimal import Decimal

from flask import current_app
from flask import has_app_context
from flask import has_request_context
from flask import request

#: The folder of the shipped catalogues.
TRANSLATIONS_DIR = os.path.join(os.path.dirname(__file__), "translations")

#: The gettext domain of the shipped catalogues.
DOMAIN = "messages"

#: The locales a catalogue ships for; the first is the default.
LOCALES = ("en", "zh_CN")

_TRADITIONAL = ("hant", "tw", "hk", "mo")
_HAVE_BABEL = importlib.util.find_spec("babel") is not None


def _flask_babel_active() -> bool:
    """Whether Flask-Babel is installed and initialised on the current app."""
    return has_app_context() and "babel" in current_app.extensions


def catalogue_locale(tag: str | None) -> str | None:
    """Map a language tag (``zh-CN``, ``zh_Hans_CN``, ``en-GB``...) to a shipped locale.

    :returns: one of :data:`LOCALES`, or ``None`` if none fits.
    """
    if not tag:
        return None
    parts = tag.replace("-", "_").lower().split("_")
    if parts[0] == "en":
        return "en"
    if parts[0] == "zh" and not any(part in _TRADITIONAL for part in parts[1:]):
        return "zh_CN"
    return None


def current_locale() -> str:
    """The shipped locale (one of :data:`LOCALES`) for the current request."""
    if _flask_babel_active():
        import flask_babel

        return catalogue_locale(str(flask_babel.get_locale() or "")) or LOCALES[0]
    if has_request_context():
        for tag, _quality in request.accept_languages:
            found = catalogue_locale(tag)
            if found:
                return found
    return LOCALES[0]


def translations(locale: str | None = None) -> stdlib_gettext.NullTranslations:
    """The shipped catalogue of ``locale`` (the current one by default).

    The standard library caches loaded catalogues, so this is cheap.
    """
    return stdlib_gettext.translation(
        DOMAIN, TRANSLATIONS_DIR, languages=[locale or current_locale()], fallback=True
    )


def _host_gettext(message: str) -> str:
    """The host's Flask-Babel translation of ``message``, or ``message``."""
    if not _flask_babel_active():
        return message
    import flask_babel

    return str(flask_babel.get_translations().ugettext(message))


def gettext(message: str, **variables: t.Any) -> str:
    """Translate ``message`` into the current locale.

    ``%(name)s`` placeholders are filled from ``variables``, as with
    Flask-Babel's ``gettext``. A message the extension's catalogue does not
    hold is looked up in the host's Flask-Babel catalogue, so the host's own
    base template keeps its translations on the member pages.
    """
    text = translations().gettext(message)
    if text == message:
        text = _host_gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: t.Any) -> str:
    """Translate a message whose form depends on the number ``n``.

    ``%(num)s`` is filled with ``n`` formatted by :func:`format_number`
    unless ``num`` is given among ``variables``.
    """
    variables.setdefault("num", format_number(n))
    text = translations().ngettext(singular, plural, n)
    return text % variables


class LazyString:
    """A message translated each time it is turned into a string.

    Module-level messages (form labels, error texts) are created before any
    request knows its locale; they are translated when used.
    """

    __slots__ = ("_message", "_variables")

    def __init__(self, message: str, **variables: t.Any) -> None:
        self._message = message
        self._variables = variables

    @property
    def message(self) -> str:
        """The untranslated message (the catalogue's msgid)."""
        return self._message

    def __str__(self) -> str:
        return gettext(self._message, **self._variables)

    def __html__(self) -> str:
        from markupsafe import escape

        return str(escape(str(self)))

    def __repr__(self) -> str:
        return f"lazy_gettext({self._message!r})"

    def __len__(self) -> int:
        return len(str(self))

    def __eq__(self, other: object) -> bool:
        return str(self) == (str(other) if isinstance(other, LazyString) else other)

    def __hash__(self) -> int:
        return hash(self._message)

    def __add__(self, other: str) -> str:
        return str(self) + other

    def __radd__(self, other: str) -> str:
        return other + str(self)

    def __mod__(self, other: t.Any) -> str:
        return str(str(self) % other)

    def __contains__(self, item: str) -> bool:
        return item in str(self)


def lazy_gettext(message: str, **variables: t.Any) -> LazyString:
    """Like :func:`gettext`, but translated when the result is used as a string."""
    return LazyString(message, **variables)


def _babel_locale() -> t.Any:
    if _flask_babel_active():
        import flask_babel

        return flask_babel.get_locale()
    return current_locale()


def format_number(number: int | Decimal) -> str:
    """Format a number (points, mostly) for the current locale.

    Without Babel, thousands are grouped with commas: ``12,345``.
    """
    if _HAVE_BABEL:
        from babel import numbers

        return str(numbers.format_decimal(number, locale=_babel_locale()))
    return f"{number:,}"


def format_currency(amount: Decimal | int | str, currency: str) -> str:
    """Format an amount of money for the current locale.

    Without Babel: the amount with its currency's decimals and the ISO code,
    ``1,234.50 USD``.
    """
    if _HAVE_BABEL:
        from babel import numbers

        return str(numbers.format_currency(Decimal(amount), currency, locale=_babel_locale()))
    from .money import decimals

    places = decimals(currency) if has_app_context() else 2
    return f"{Decimal(amount):,.{places}f} {currency}"


def format_datetime(value: dt.datetime | None) -> str:
    """Format a naive UTC datetime for the current locale.

    With Flask-Babel initialised it is shown in the host's time zone
    (``BABEL_DEFAULT_TIMEZONE``); otherwise in UTC. ``None`` gives ``""``.
    """
    if value is None:
        return ""
    if _flask_babel_active():
        import flask_babel

        return str(flask_babel.format_datetime(value, "medium"))
    if _HAVE_BABEL:
        from babel import dates

        aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return str(dates.format_datetime(aware, "medium", tzinfo=dt.UTC, locale=current_locale()))
    return value.strftime("%Y-%m-%d %H:%M UTC")


def format_date(value: dt.date | dt.datetime | None) -> str:
    """Format a date for the current locale; ``None`` gives ``""``."""
    if value is None:
        return ""
    if _flask_babel_active():
        import flask_babel

        return str(flask_babel.format_date(value, "medium"))
    if _HAVE_BABEL:
        from babel import dates

        return str(dates.format_date(value, "medium", locale=current_locale()))
    return value.strftime("%Y-%m-%d")


__all__ = [
    "LOCALES",
    "LazyString",
    "catalogue_locale",
    "current_locale",
    "format_currency",
    "format_date",
    "format_datetime",
    "format_number",
    "gettext",
    "lazy_gettext",
    "ngettext",
    "translations",
]
