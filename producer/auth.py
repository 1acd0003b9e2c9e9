"""Who is asking: ``Authorization: Bearer <API key>``, and what the key may do.

A missing or unknown (or revoked) key gets 401 with ``WWW-Authenticate: Bearer``; a key without the role a route
needs gets 403; a key over ``RATE_LIMIT`` gets 429 with ``Retry-After``. With ``AUTH_DISABLED`` (a local demo)
every request acts as one local principal with every role.

Each check is one dependency that reads the request itself: FastAPI's cost per request grows with every node of
a route's dependency tree (about a third of ``POST /images``'s CPU went to solving a tree of seven), and an
``HTTPBearer`` subclass still documents the scheme in the OpenAPI document. ``POST /images``, the hot path, calls
:func:`require` itself and declares the scheme in its OpenAPI entry: even one node cost it a tenth of its CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from core.api_keys import Role
from producer.deps import Services, get_services
from producer.metrics import Refusal

_DESCRIPTION = "An API key made with `image-keys create`."


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: its key's id (None with auth off), and its roles."""

    key_id: str | None
    roles: frozenset[Role]

    @property
    def idempotency_scope(self) -> str:
        """What Idempotency-Keys are scoped to: one client's key never names another client's job."""
        return self.key_id or "local"

    def may_see(self, owner: str | None) -> bool:
        return Role.ADMIN in self.roles or self.key_id is None or owner == self.key_id


_LOCAL = Principal(key_id=None, roles=frozenset(Role))


async def authenticate(request: Request, services: Services) -> Principal:
    """The caller named by the request's API key; 401 without a valid one (unless auth is off)."""
    if services.settings.auth_disabled:
        return _LOCAL
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if not credentials or scheme.lower() != "bearer":
        raise HTTPException(401, "an API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    return await principal_of_key(services, credentials)


async def principal_of_key(services: Services, secret: str) -> Principal:
    """The caller holding the API key ``secret`` (from a header or the console's cookie); 401 if none."""
    if services.settings.auth_disabled:
        return _LOCAL
    key = await services.keys.find(secret)
    if key is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return Principal(key_id=key.key_id, roles=key.roles)


async def require(request: Request, role: Role) -> Principal:
    """The caller, if its key has ``role`` (else 403) and is within its rate (else 429)."""
    services = get_services(request)
    principal = await authenticate(request, services)
    authorize(services, principal, role)
    return principal


def authorize(services: Services, principal: Principal, role: Role, *, counted: bool = True) -> None:
    """Raise 403 unless ``principal`` may act as ``role``, and (``counted``) 429 when its key is over its rate."""
    if role not in principal.roles and Role.ADMIN not in principal.roles:
        raise HTTPException(403, f"this API key may not {role.value}")
    if not counted:
        return
    if principal.key_id is not None and (wait_s := services.rate_limiter.retry_after_s(principal.key_id)):
        services.metrics.refused(Refusal.RATE_LIMITED)
        raise HTTPException(
            429,
            f"this API key made more than {services.settings.rate_limit} requests",
            {"Retry-After": str(wait_s)},
        )


class RequireRole(HTTPBearer):
    """A dependency: :func:`require` as one node, documented as the bearer scheme."""

    def __init__(self, role: Role) -> None:
        super().__init__(auto_error=False, description=_DESCRIPTION, scheme_name="HTTPBearer")
        self.role = role

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return await require(request, self.role)


class OptionalPrincipal(HTTPBearer):
    """A dependency: the caller if it sent a valid key (or auth is off), else None, for routes open to all with
    more for some."""

    def __init__(self) -> None:
        super().__init__(auto_error=False, description=_DESCRIPTION, scheme_name="HTTPBearer")

    async def __call__(self, request: Request) -> Principal | None:  # type: ignore[override]
        try:
            return await authenticate(request, get_services(request))
        except HTTPException:
            return None


Reader = Annotated[Principal, Depends(RequireRole(Role.READ))]
Submitter = Annotated[Principal, Depends(RequireRole(Role.SUBMIT))]
MaybePrincipal = Annotated[Principal | None, Depends(OptionalPrincipal())]
