"""The shop's forms (Flask-WTF: each carries a CSRF token)."""

from __future__ import annotations

import datetime as dt

from flask_wtf import FlaskForm
from wtforms import DateField
from wtforms import EmailField
from wtforms import HiddenField
from wtforms import IntegerField
from wtforms import PasswordField
from wtforms import StringField
from wtforms import SubmitField
from wtforms import TextAreaField
from wtforms import ValidationError
from wtforms.validators import AnyOf
from wtforms.validators import DataRequired
from wtforms.validators import Length
from wtforms.validators import NumberRange
from wtforms.validators import Optional
from wtforms.validators import Regexp

from .ordering import MAX_QUANTITY
from .ordering import SHIPPING_OPTIONS

#: Enough of a check for a demo: something@somewhere.tld
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class SignupForm(FlaskForm):
    name = StringField("Your name", validators=[DataRequired(), Length(max=120)])
    email = EmailField(
        "Email",
        validators=[DataRequired(), Length(max=254), Regexp(EMAIL, message="Enter an email address.")],
    )
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])
    birthday = DateField("Birthday", validators=[Optional()])
    #: A friend's referral code, from the ``?ref=`` of their link.
    ref = HiddenField(validators=[Optional(), Length(max=16)])
    next = HiddenField()

    def validate_birthday(self, field: DateField) -> None:
        today = dt.date.today()
        if field.data is not None and not dt.date(1900, 1, 1) <= field.data <= today:
            raise ValidationError("Enter your date of birth: a date in the past.")


class ReviewForm(FlaskForm):
    rating = IntegerField(
        "Rating",
        validators=[DataRequired(message="Choose a rating."), NumberRange(1, 5, "Choose 1 to 5 stars.")],
    )
    text = TextAreaField(
        "Your review", validators=[DataRequired(message="Write a few words."), Length(max=2000)]
    )


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    next = HiddenField()


class AddToCartForm(FlaskForm):
    quantity = IntegerField("Quantity", default=1, validators=[DataRequired(), NumberRange(1, MAX_QUANTITY)])


class CartLineForm(FlaskForm):
    quantity = IntegerField("Quantity", validators=[NumberRange(0, MAX_QUANTITY)])


class CheckoutForm(FlaskForm):
    #: A key of SHIPPING_OPTIONS (the template draws the radio buttons).
    shipping = StringField(
        "Delivery",
        default="standard",
        validators=[DataRequired(), AnyOf(list(SHIPPING_OPTIONS), message="Choose a delivery option.")],
    )
    coupon = StringField("Coupon code", validators=[Optional(), Length(max=32)])
    update = SubmitField("Update totals")
    place = SubmitField("Continue to payment")


class ActionForm(FlaskForm):
    """A button that changes something (pay, cancel, ship...): just the CSRF token."""


class RefundForm(FlaskForm):
    #: Made when the page is shown: a double submit refunds once.
    key = HiddenField(validators=[DataRequired(), Length(min=8, max=64)])
