"""Where a page may send the member next: only to a path on this site.

Every redirect of the member pages that follows a ``next`` value goes through
:func:`safe_next`; a host's own login view can use it too.

.. versionadded:: 0.1
"""

from __future__ import annotations

import typing as t
from urllib.parse import unquote
from urllib.parse import urlsplit

from flask import redirect
from flask import url_for
from werkzeug.wrappers import Response

#: The longest ``next`` value accepted.
MAX_NEXT_LENGTH = 2048


def _unsafe(text: str) -> bool:
    if any(ord(char) < 32 or ord(char) == 127 or char == "\\" for char in text):
        return True
    if not text.startswith("/") or text.startswith("//"):
        return True
    parts = urlsplit(text)
    return bool(parts.scheme or parts.netloc)


def safe_next(url: t.Any) -> str | None:
    """Return ``url`` if it is a path on this site, else ``None``.

    Accepted: a relative URL that starts with one ``/`` (``/cart``,
    ``/loyalty/rewards?page=2``). Refused: absolute URLs (``https://...``),
    scheme-relative ones (``//evil.example``), any scheme (``javascript:``,
    ``data:``), backslashes (browsers read ``/\\evil.example`` as a host),
    control characters and whitespace anywhere, values that become any of
    these once percent-decoded (once or twice), non-strings, and values over
    :data:`MAX_NEXT_LENGTH` characters.

    :param url: the untrusted value, typically ``request.form["next"]``.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_NEXT_LENGTH:
        return None
    if any(char.isspace() for char in url):
        return None
    once = unquote(url)
    if _unsafe(url) or _unsafe(once) or _unsafe(unquote(once)):
        return None
    return url


def redirect_next(value: t.Any, endpoint: str, **values: t.Any) -> Response:
    """Redirect to ``value`` if :func:`safe_next` accepts it, else to ``endpoint``.

    :param endpoint: the fallback, built with :func:`flask.url_for` and ``values``.
    """
    return redirect(safe_next(value) or url_for(endpoint, **values), 303)
