"""How a browser gets into the blueprint: a signed sign-in cookie and CSRF tokens.

API clients authenticate every request with ``Authorization: Bearer
<MEMQUEUE_TOKEN>``. A browser cannot send that header from a plain link or
form, so the dashboard's sign-in form trades the token, once, for a cookie
of the blueprint's own, signed with the app's ``SECRET_KEY`` (itsdangerous,
as Flask ships it). It is not Flask's ``session``: the app may keep its own
session elsewhere (server-side, another cookie name), and signing the
dashboard in must never read or rewrite the app's session.

A cookie travels with every request the browser makes, also those another
site triggers, so whatever a cookie authorizes must prove it came from our
own pages: every unsafe request authorized by the cookie (and every form
the dashboard posts, signed in or not) carries a CSRF token that matches
the ``memqueue_csrf`` cookie (the double-submit pattern). The blueprint's
same-origin check comes on top.

Markers on view functions tell the blueprint's access check what a view
is, so that the check itself stays one function for every route:
:func:`public` (answers without a token: the sign-in form) and
:func:`page` (an HTML page: denials are rendered as a page, not JSON).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.wrappers import Response

V = TypeVar("V", bound=Callable[..., Any])

#: The sign-in cookie's name (its path is the blueprint's prefix).
SESSION_COOKIE = "memqueue_session"
#: The CSRF cookie's name; forms echo its value in :data:`CSRF_FIELD`.
CSRF_COOKIE = "memqueue_csrf"
#: The form field that carries the CSRF token.
CSRF_FIELD = "csrf_token"
#: The header that carries the CSRF token on a fetch() or an API call.
CSRF_HEADER = "X-CSRF-Token"
#: Seconds a sign-in lasts; after that the browser signs in again.
SESSION_MAX_AGE = 12 * 3600
#: A sign-in cookie longer than this is none of ours and is not unsigned at all.
SESSION_COOKIE_LIMIT = 1024
_SALT = "flask-memqueue.dashboard-sign-in"

#: Attribute names of the markers set on view functions.
PUBLIC_ATTR = "memqueue_public"
PAGE_ATTR = "memqueue_error_page"


class NoSecretKey(RuntimeError):
    """The app has no ``SECRET_KEY``, so no cookie can be signed."""


# -- markers on views ------------------------------------------------------------
def public(view: V) -> V:
    """Let ``view`` answer without a token (it is how one signs in)."""
    setattr(view, PUBLIC_ATTR, True)
    return view


def page(render_error: Callable[[int, str, dict[str, str]], ResponseReturnValue]) -> Callable[[V], V]:
    """Mark an HTML view: access denials (and API errors) on it are rendered by ``render_error``.

    The access check still runs for it, exactly as for a JSON route; only
    the form of the refusal changes.
    """

    def mark(view: V) -> V:
        setattr(view, PAGE_ATTR, render_error)
        return view

    return mark


def view_marker(name: str) -> Any:
    """The marker ``name`` of the view this request is routed to, or None."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, name, None)


# -- the signed sign-in cookie ------------------------------------------------------
def _secret() -> bytes:
    key = current_app.secret_key
    if not key:
        raise NoSecretKey(
            "this app has no SECRET_KEY, so the dashboard cannot give your browser a signed"
            " sign-in cookie. Set app.config['SECRET_KEY'] (for example from"
            ' python -c "import secrets; print(secrets.token_hex())") and restart;'
            " API clients can use 'Authorization: Bearer <MEMQUEUE_TOKEN>' meanwhile."
        )
    return key if isinstance(key, bytes) else str(key).encode()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(), salt=_SALT)


def _fingerprint(token: str) -> str:
    """Binds a cookie to the token it was issued for: a new token signs everyone out.

    Keyed with the secret, so the (readable) cookie says nothing about the token.
    """
    return hmac.new(_secret(), token.encode(), hashlib.sha256).hexdigest()


def session_value(token: str) -> str:
    """A signed cookie value for a browser that showed ``token``.

    :raises NoSecretKey: the app has no ``SECRET_KEY``.
    """
    return _serializer().dumps({"t": _fingerprint(token)})


def session_ok(token: str) -> bool:
    """True if the request carries a valid, unexpired sign-in cookie for ``token``."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > SESSION_COOKIE_LIMIT or not raw.isascii() or not current_app.secret_key:
        return False
    try:
        data = _serializer().loads(raw, max_age=SESSION_MAX_AGE)
    except (BadSignature, ValueError):  # BadSignature: also SignatureExpired
        return False
    return isinstance(data, dict) and hmac.compare_digest(str(data.get("t", "")), _fingerprint(token))


def cookie_path() -> str:
    """The blueprint's prefix (with the app's script root): our cookies go nowhere else."""
    prefix = current_app.extensions["memqueue"].config.url_prefix or ""
    return (request.script_root + prefix) or "/"


def set_cookie(response: Response, name: str, value: str, max_age: int | None, samesite: str = "Lax") -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=cookie_path(), secure=request.is_secure, httponly=True, samesite=samesite
    )


def delete_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=cookie_path(), secure=request.is_secure, httponly=True, samesite="Lax")


# -- CSRF -----------------------------------------------------------------------------
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,128}")


def _csrf_cookie() -> str | None:
    """The CSRF cookie if it looks like a token we make (``secrets.token_urlsafe(32)``), else None.

    A cookie is input: whatever else it holds is never echoed into a page
    nor compared, it is replaced by a new token.
    """
    value = request.cookies.get(CSRF_COOKIE, "")
    return value if _TOKEN_SHAPE.fullmatch(value) else None


def csrf_token() -> str:
    """This browser's CSRF token; a new one is made (and set by :func:`save_csrf_cookie`) if it has none."""
    known = getattr(g, "_memqueue_csrf", None)
    if known is not None:
        return str(known)
    token = _csrf_cookie()
    if token is None:
        token = secrets.token_urlsafe(32)
        g._memqueue_new_csrf = True
    g._memqueue_csrf = token
    return token


def save_csrf_cookie(response: Response) -> None:
    """Set the CSRF cookie on ``response`` if this request made a new token."""
    if getattr(g, "_memqueue_new_csrf", False):
        set_cookie(response, CSRF_COOKIE, g._memqueue_csrf, None, samesite="Strict")


def csrf_ok(*, form: bool = True) -> bool:
    """True if the request's header (or, with ``form``, its form field) matches its CSRF cookie.

    JSON routes pass ``form=False``: parsing a form body there would consume
    the body the route itself reads.
    """
    cookie = _csrf_cookie()
    if cookie is None:
        return False
    sent = request.headers.get(CSRF_HEADER) or (request.form.get(CSRF_FIELD, "") if form else "")
    return sent.isascii() and hmac.compare_digest(sent.encode(), cookie.encode())
