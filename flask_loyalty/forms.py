"""Flask-WTF forms of the member pages.

Every form that changes something is a :class:`~flask_wtf.FlaskForm` and so
carries a CSRF token (when ``WTF_CSRF_ENABLED``); a missing or invalid token
answers 400 and writes nothing. Messages are translated through
:mod:`flask_loyalty.i18n`. Templates get the forms as ``<page>_form``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import re
import typing as t

from flask_wtf import FlaskForm
from wtforms import Field
from wtforms import HiddenField
from wtforms import SelectMultipleField
from wtforms import StringField
from wtforms.validators import StopValidation
from wtforms.validators import ValidationError

from .i18n import lazy_gettext as _l
from .models import ENTRY_KINDS

#: The most points a form accepts; more is refused before any service is called.
MAX_POINTS = 10**12

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _whole_points(form: FlaskForm, field: Field) -> None:
    """Turn the field's text into a positive whole number of points (``field.points``)."""
    text = (field.data or "").strip().replace(",", "")
    if not text:
        raise StopValidation(str(_l("Enter a number of points.")))
    if not re.fullmatch(r"[+-]?\d+", text):
        raise StopValidation(str(_l("Enter a whole number of points, such as 500.")))
    value = int(text)
    if value <= 0:
        raise StopValidation(str(_l("Enter a number of points greater than zero.")))
    if value > MAX_POINTS:
        raise StopValidation(str(_l("That is more points than can be applied.")))
    field.points = value


def _token(form: FlaskForm, field: Field) -> None:
    if not isinstance(field.data, str) or not _TOKEN.match(field.data):
        raise StopValidation(str(_l("This form is out of date; reload the page and try again.")))


class RedeemForm(FlaskForm):  # type: ignore[misc]
    """Redeem a reward: a review step, then a confirmation.

    ``token`` is the redemption's idempotency key, made when the reward page
    is shown and carried through both steps, so a double submit of the
    confirmation redeems once.
    """

    token = HiddenField(validators=[_token])
    #: Empty on the review step, ``"yes"`` on the confirmation.
    confirm = HiddenField()
    next = HiddenField()

    @property
    def confirmed(self) -> bool:
        """Whether this is the confirmation step."""
        return bool(self.confirm.data == "yes")


class CancelRedemptionForm(FlaskForm):  # type: ignore[misc]
    """Cancel an issued reward and get its points back."""

    next = HiddenField()


class ApplyPointsForm(FlaskForm):  # type: ignore[misc]
    """Apply points to the order at checkout."""

    points = StringField(_l("Points to apply"), validators=[_whole_points])
    next = HiddenField()


class RemovePointsForm(FlaskForm):  # type: ignore[misc]
    """Remove the points applied to the order at checkout."""

    next = HiddenField()


class KindField(SelectMultipleField):  # type: ignore[misc]
    """Entry kinds, refusing unknown ones with a translated message."""

    def pre_validate(self, form: FlaskForm) -> None:
        """Refuse kinds that are not ledger entry kinds."""
        unknown = [value for value in self.data or () if value not in ENTRY_KINDS]
        if unknown:
            raise StopValidation(str(_l("Unknown kind of entry: %(kinds)s.", kinds=", ".join(unknown))))


def _date(value: str | None, label: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise ValidationError(
            str(_l("%(field)s must be a date written as YYYY-MM-DD.", field=label))
        ) from None


class HistoryFilterForm(FlaskForm):  # type: ignore[misc]
    """The history page's filters, read from the query string (no CSRF: it changes nothing)."""

    class Meta:
        csrf = False

    kind = KindField(_l("Kind"), choices=list(ENTRY_KINDS))
    since = StringField(_l("From"))
    until = StringField(_l("To"))
    before = StringField()

    def validate_since(self, field: Field) -> None:
        """Parse ``since`` (``YYYY-MM-DD``) into ``self.start``."""
        self.start = _date(field.data, str(_l("From")))

    def validate_until(self, field: Field) -> None:
        """Parse ``until`` (``YYYY-MM-DD``, inclusive) into ``self.end``, after ``since``."""
        day = _date(field.data, str(_l("To")))
        self.end = None if day is None else day + dt.timedelta(days=1)
        start = getattr(self, "start", None)
        if start is not None and self.end is not None and self.end <= start:
            raise ValidationError(str(_l("The end date must not be before the start date.")))

    def validate_before(self, field: Field) -> None:
        """Parse the page cursor into ``self.cursor``."""
        text = field.data or ""
        if text and (not text.isdigit() or not 0 < int(text) < 2**63):
            raise ValidationError(str(_l("This page link is not valid.")))
        self.cursor = int(text) if text else None

    def filters(self) -> dict[str, t.Any]:
        """The validated filters as keyword arguments of :func:`flask_loyalty.history.history`."""
        return {
            "kinds": tuple(self.kind.data or ()),
            "since": getattr(self, "start", None),
            "until": getattr(self, "end", None),
            "before": getattr(self, "cursor", None),
        }

    def query(self) -> dict[str, t.Any]:
        """The filters as query-string values (for page links), without the cursor."""
        values: dict[str, t.Any] = {}
        if self.kind.data:
            values["kind"] = list(self.kind.data)
        if self.since.data:
            values["since"] = self.since.data
        if self.until.data:
            values["until"] = self.until.data
        return values
