"""Enrolling, finding and closing members."""

from __future__ import annotations

import datetime as dt
import typing as t

from sqlalchemy.exc import IntegrityError

from . import signals
from .config import config_value
from .errors import InvalidRequest
from .errors import MemberNotFound
from .posting import check_text
from .posting import member_id_of
from .proxies import current_loyalty
from .proxies import get_state
from .signals import send
from .store import Balances


def enroll(
    *,
    name: str = "",
    email: str | None = None,
    phone: str | None = None,
    password: str | None = None,
    user_id: t.Any = None,
    birthday: dt.date | None = None,
) -> t.Any:
    """Create a member and return it.

    :param email: stored lower-cased; unique among members.
    :param password: set for shops that use the member as their login user.
    :param user_id: the host user's primary key, for shops with their own
        user model; stored as a string, unique among members.
    :param birthday: the member's date of birth, for the ``birthday`` action.
    :raises InvalidRequest: on malformed input, or an email or user id that
        another member already has (nothing is written then).

    A ``signup`` action (see :mod:`flask_loyalty.actions`) is awarded to the
    new member.
    """
    if birthday is not None and (not isinstance(birthday, dt.date) or isinstance(birthday, dt.datetime)):
        raise InvalidRequest(f"birthday must be a date, not {birthday!r}.")
    values: dict[str, t.Any] = {
        "name": check_text(name, "name", 120) or "",
        "email": (check_text(email, "email", 254) or "").strip().lower() or None,
        "phone": check_text(phone, "phone", 40),
        "user_id": None if user_id is None else str(user_id),
        "birthday": birthday,
    }
    if values["email"] is not None and "@" not in values["email"]:
        raise InvalidRequest(f"{email!r} is not an email address.")
    store = current_loyalty.store
    values["created_at"] = current_loyalty.now()

    def work() -> t.Any:
        member = store.add_member(**values)
        if password is not None:
            member.set_password(password)
        return member

    try:
        member = store.atomic(work)
    except IntegrityError as error:
        # The database's unique constraints decide, so that two concurrent
        # enrolments with the same email cannot both succeed.
        taken = " or ".join(f"{k.replace('_', ' ')} {values[k]!r}" for k in ("email", "user_id") if values[k])
        raise InvalidRequest(f"A member with {taken} already exists.") from error
    send(signals.member_enrolled, member=member)
    from .actions import actions
    from .actions import award

    if "signup" in actions():
        # Keyed "once": a retry after a failure here cannot pay the bonus twice.
        award(int(member.id), "signup", key="once")
    return member


def get(member: t.Any) -> t.Any:
    """Return the member (the ORM object) for a member or member id.

    :raises MemberNotFound: if there is no such member.
    """
    member_id = member_id_of(member)
    found = current_loyalty.store.get_member(member_id)
    if found is None:
        raise MemberNotFound(f"No member has id {member_id}.")
    return found


def balances(member: t.Any) -> Balances:
    """The member's cached balances: one primary-key read, never a ledger sum."""
    found = get(member)
    return Balances(found.available, found.pending, found.reserved, found.lifetime_earned)


def close(member: t.Any) -> None:
    """Close a member's account; its ledger stays, and takes no new operations.

    :raises MemberNotFound: if there is no such member.
    """
    member_id = member_id_of(member)
    state = get_state()

    def work() -> None:
        state.store.lock_member(member_id, active=False)
        state.store.close_member(member_id, state.now())

    state.store.atomic(work)


def member_for_user(user: t.Any, *, auto_enroll: bool | None = None) -> int:
    """The member id of ``user``: a member, a member id, or a host user.

    A host user is linked through ``Member.user_id`` (its primary key as a
    string). A user with no member yet is enrolled on first use when
    ``auto_enroll`` is true (``LOYALTY_AUTO_ENROLL_ENABLED`` by default), with the
    user's ``name`` and ``email`` attributes if it has them.

    :raises MemberNotFound: if the user has no member and is not enrolled.
    :raises InvalidRequest: if ``user`` is none of these, or is not an
        instance of ``LOYALTY_USER_MODEL`` when that is set.
    """
    state = get_state()
    if isinstance(user, int | state.models.Member):
        return member_id_of(user)
    model = state.user_model
    if model is not None and not isinstance(user, model):
        raise InvalidRequest(
            f"{user!r} is not a {model.__module__}.{model.__qualname__} (LOYALTY_USER_MODEL),"
            " a member or a member id."
        )
    key = getattr(user, "id", None)
    if key is None:
        raise InvalidRequest(f"{user!r} is not a member or a user with an id.")
    found = state.store.atomic(lambda: state.store.find_member_by_user(str(key)))
    if found is not None:
        return int(found.id)
    if auto_enroll is None:
        auto_enroll = bool(config_value("AUTO_ENROLL_ENABLED"))
    if not auto_enroll:
        raise MemberNotFound(f"User {key!r} is not a member.")
    email = getattr(user, "email", None)
    try:
        return int(enroll(name=str(getattr(user, "name", "") or ""), email=email, user_id=key).id)
    except InvalidRequest:
        # Enrolled at the same moment by another request, or the email is a
        # member's already: the user's own link decides.
        found = state.store.atomic(lambda: state.store.find_member_by_user(str(key), fresh=True))
        if found is None:
            raise
        return int(found.id)
