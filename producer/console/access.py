"""Who may see a console page: the API key in the session cookie, with the roles the API gives it.

Console routes answer with pages, never JSON errors: :class:`ConsoleRoute` turns a missing session into a
redirect to the login form, and a refusal (403, 429, a stale form) into a page that says what happened.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute

from core.api_keys import Role
from producer.auth import Principal, authorize, principal_of_key
from producer.console import session
from producer.console.rendering import render
from producer.deps import get_services


class LoginRequired(Exception):
    """No (valid) key in the session: the browser goes to the login form and comes back."""


async def viewer(request: Request, role: Role, *, counted: bool = True) -> Principal:
    """The console's user, if its key has ``role``; raises :class:`LoginRequired` or a 403/429 ``HTTPException``.

    Pages and forms count against the key's ``RATE_LIMIT``; the images a page shows do not (``counted=False``):
    a page of 25 jobs loads 50 thumbnails at once, and the page that links them was counted.
    """
    principal = await optional_viewer(request)
    if principal is None:  # never logged in, or the key was revoked since
        raise LoginRequired
    authorize(get_services(request), principal, role, counted=counted)
    return principal


async def optional_viewer(request: Request) -> Principal | None:
    """The console's user if logged in (for the navigation bar of pages anyone may see), else None."""
    services = get_services(request)
    key = session.api_key(request)
    if key is None and not services.settings.auth_disabled:
        return None
    try:
        return await principal_of_key(services, key or "")
    except HTTPException:
        return None


def is_admin(principal: Principal | None) -> bool:
    return principal is not None and Role.ADMIN in principal.roles


class ConsoleRoute(APIRoute):
    """A console route: its failures become pages (or a redirect to log in), not the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)
            except session.CsrfRejected as exc:
                return error_page(request, 403, "Form expired", str(exc))
            except RequestValidationError:
                return error_page(request, 404, "Not found", "There is no such page or job.")
            except HTTPException as exc:
                page = error_page(request, exc.status_code, _TITLES.get(exc.status_code, "Error"), str(exc.detail))
                if exc.headers and "Retry-After" in exc.headers:
                    page.headers["Retry-After"] = exc.headers["Retry-After"]
                return page

        return handler


_TITLES = {
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    410: "Expired",
    429: "Too many requests",
    503: "Unavailable",
}


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return render(request, "error.html", {"title": title, "message": message, "user": None}, status_code=status_code)
