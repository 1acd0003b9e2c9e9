"""Who is using the console, and proof that a form came from the console itself.

After the login form, the API key lives in a cookie the page's scripts cannot read (``HttpOnly``), that other
sites' pages never make the browser send (``SameSite=Strict``), scoped to ``/console``; it is ``Secure`` whenever
the console is reached over HTTPS. Every form that changes something carries a CSRF token that must equal a
second such cookie (the double-submit pattern, which needs no server-side state, so any number of API processes
agree). The key is still looked up on every request: revoking it ends its console sessions at once.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from fastapi.responses import Response

KEY_COOKIE = "console_key"
CSRF_COOKIE = "console_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/console"
SESSION_MAX_AGE_S = 12 * 3600


class CsrfRejected(Exception):
    """A state-changing request without the console's token: not sent by one of its pages."""


def api_key(request: Request) -> str | None:
    """The API key this browser logged in with, if any."""
    return request.cookies.get(KEY_COOKIE) or None


def csrf_token(request: Request) -> str:
    """The token this browser's forms carry: its cookie's, or a new one that :func:`keep_csrf_token` sets."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token:
        token = request.state.new_csrf_token = secrets.token_urlsafe(32)
    return token


def keep_csrf_token(request: Request, response: Response) -> None:
    """Set the CSRF cookie on ``response`` if :func:`csrf_token` made a new one for this request."""
    token = getattr(request.state, "new_csrf_token", None)
    if token is not None:
        _set(request, response, CSRF_COOKIE, token, max_age_s=None)


def check_csrf(request: Request, submitted: str | None) -> None:
    """Raise :class:`CsrfRejected` unless ``submitted`` (a form field or header) equals the CSRF cookie."""
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise CsrfRejected("the form's security token is missing or stale; reload the page and try again")


def log_in(request: Request, response: Response, key: str) -> None:
    """Keep ``key`` in the session cookie, and start a fresh CSRF token with the new session."""
    _set(request, response, KEY_COOKIE, key, max_age_s=SESSION_MAX_AGE_S)
    _set(request, response, CSRF_COOKIE, secrets.token_urlsafe(32), max_age_s=None)


def log_out(response: Response) -> None:
    response.delete_cookie(KEY_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def _set(request: Request, response: Response, name: str, value: str, *, max_age_s: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age_s,
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
