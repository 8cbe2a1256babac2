"""``Idempotency-Key`` for the JSON API's POST requests.

A client sends the same key again when it does not know whether a request
went through (a timeout, a dropped connection). The first request with a key
*claims* it: a row of ``ApiResponse`` for the member and key, which the
unique ``(member_id, key)`` constraint lets exactly one request insert. The
claimant runs the request and stores its status and body in the row.

A later request with the key and the same method, path, query and body gets
the stored response back, without running again. The same key with another
request is refused (:class:`~flask_loyalty.errors.IdempotencyConflict`). A
request that arrives while the first is still running waits for its
response (up to :data:`WAIT_SECONDS`), then replays it, or is refused with
:class:`RequestInProgress`.

Responses to requests that were carried out (2xx), or refused because of the
state of the account, a reward or an order (404, 409), are stored; a refused
request (its body or headers invalid, 4xx otherwise) or a failure (5xx)
releases the key, so the client can correct it and send it again. A claim
whose request never finished (the process died) is taken over after
:data:`STALE_AFTER`.

.. versionadded:: 0.1
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time

from sqlalchemy.exc import IntegrityError

from .errors import IdempotencyConflict
from .i18n import gettext
from .proxies import current_loyalty
from .proxies import get_state

__all__ = ["KEY_HEADER", "KEY_PATTERN", "RequestInProgress", "Claim", "StoredResponse", "check_key",
           "fingerprint", "claim", "finish", "release", "purge"]  # fmt: skip

#: The request header that carries the key.
KEY_HEADER = "Idempotency-Key"
#: What a key may be: 1 to 128 visible ASCII characters.
KEY_PATTERN = r"^[!-~]{1,128}$"
#: How long a repeat waits for the first request's response.
WAIT_SECONDS = 10.0
#: After how long a claim whose request never finished may be taken over.
STALE_AFTER = dt.timedelta(minutes=2)
#: Bodies longer than this (in bytes) are not stored; the key is released.
MAX_STORED_BODY = 60_000
_POLL_SECONDS = 0.05
_IN_PROGRESS = 0


class RequestInProgress(IdempotencyConflict):
    """A request with the same key is still running."""

    code = "request_in_progress"


@dataclasses.dataclass(frozen=True)
class Claim:
    """This request holds the key: it runs, then :func:`finish` or :func:`release`."""

    id: int
    member_id: int
    key: str


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    """The response of an earlier request with the key, to send again."""

    status_code: int
    body: str


def check_key(value: str) -> str:
    """Return ``value`` if it is a usable key.

    :raises ValueError: if it is not 1 to 128 visible ASCII characters.
    """
    if not re.fullmatch(KEY_PATTERN[1:-1], value):
        raise ValueError(value)
    return value


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """A digest of the request a key is used with.

    A JSON body counts by its content, so whitespace and the order of its
    keys do not matter; any other body counts byte for byte.
    """
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim(member_id: int, key: str, print_: str, *, wait: float | None = None) -> Claim | StoredResponse:
    """Claim ``key`` for the member's request with fingerprint ``print_``.

    :returns: a :class:`Claim` if this request is to run, or the
        :class:`StoredResponse` of the request that ran with the key.
    :raises IdempotencyConflict: if the key was used with another request.
    :raises RequestInProgress: if the request with the key is still running
        after ``wait`` seconds (:data:`WAIT_SECONDS` by default).
    """
    state = get_state()
    store = state.store
    deadline = time.monotonic() + (WAIT_SECONDS if wait is None else wait)
    while True:
        now = state.now()
        values = {"member_id": member_id, "key": key, "fingerprint": print_, "status_code": _IN_PROGRESS,
                  "body": "", "created_at": now}  # fmt: skip
        try:
            return Claim(store.atomic(functools.partial(store.insert_api_response, values)), member_id, key)
        except IntegrityError:
            pass
        row = store.atomic(lambda: store.find_api_response(member_id, key))
        if row is None and time.monotonic() < deadline:
            continue  # released in the meantime: claim it again
        if row is None:
            raise RequestInProgress(gettext("Idempotency-Key %(key)s is busy; try again.", key=key))
        if row.fingerprint != print_:
            raise IdempotencyConflict(
                gettext("Idempotency-Key %(key)s was already used for another request.", key=key)
            )
        if row.status_code != _IN_PROGRESS:
            return StoredResponse(int(row.status_code), str(row.body))
        if store.atomic(functools.partial(store.take_over_api_response, row.id, now - STALE_AFTER, now)):
            return Claim(int(row.id), member_id, key)
        if time.monotonic() >= deadline:
            raise RequestInProgress(
                gettext("A request with Idempotency-Key %(key)s is still running; try again.", key=key)
            )
        time.sleep(_POLL_SECONDS)


def finish(held: Claim, status_code: int, body: str) -> None:
    """Store the response of the claimed request (or release the key if the body is too long)."""
    store = current_loyalty.store
    if len(body.encode()) > MAX_STORED_BODY:
        release(held)
        return
    store.atomic(lambda: store.finish_api_response(held.id, status_code, body))


def release(held: Claim) -> None:
    """Give up the claim: the key may be used again."""
    store = current_loyalty.store
    store.atomic(lambda: store.delete_api_response(held.id))


def purge(*, older_than: dt.timedelta = dt.timedelta(days=1), chunk: int = 1000) -> int:
    """Delete stored responses older than ``older_than``; return how many.

    Keys older than that can be used again as new keys. Safe to run from
    cron on several hosts at once.
    """
    state = get_state()
    before = state.now() - older_than
    total = 0
    while True:
        done = int(state.store.atomic(lambda: state.store.purge_api_responses(before, chunk)))
        total += done
        if done < chunk:
            return total
