"""Who is asking: ``Authorization: Bearer <API key>``, and what the key may do.

A missing or unknown (or revoked) key gets 401 with ``WWW-Authenticate: Bearer``; a key without the role a route
needs gets 403; a key over ``RATE_LIMIT`` gets 429 with ``Retry-After``. With ``AUTH_DISABLED`` (a local demo)
every request acts as one local principal with every role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.api_keys import Role
from producer.deps import ServicesDep

_bearer = HTTPBearer(auto_error=False, description="An API key made with `image-keys create`.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


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


async def authenticate(services: ServicesDep, credentials: BearerDep) -> Principal:
    if services.settings.auth_disabled:
        return _LOCAL
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "an API key is required: Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"})
    key = await services.keys.find(credentials.credentials)
    if key is None:
        raise HTTPException(
            401, "the API key is unknown or revoked", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    return Principal(key_id=key.key_id, roles=key.roles)


async def optional_principal(services: ServicesDep, credentials: BearerDep) -> Principal | None:
    """The caller if it sent a valid key (or auth is off), else None: for routes open to all with more for some."""
    try:
        return await authenticate(services, credentials)
    except HTTPException:
        return None


def requiring(role: Role) -> object:
    """A dependency: the caller, if its key has ``role`` (else 403)."""

    async def check(services: ServicesDep, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if role not in principal.roles and Role.ADMIN not in principal.roles:
            raise HTTPException(403, f"this API key may not {role.value}")
        if principal.key_id is not None and (wait_s := services.rate_limiter.retry_after_s(principal.key_id)):
            raise HTTPException(
                429,
                f"this API key made more than {services.settings.rate_limit} requests",
                {"Retry-After": str(wait_s)},
            )
        return principal

    return Depends(check)


Submitter = Annotated[Principal, requiring(Role.SUBMIT)]
Reader = Annotated[Principal, requiring(Role.READ)]
MaybePrincipal = Annotated[Principal | None, Depends(optional_principal)]
