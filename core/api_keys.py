"""API keys: who may submit and read jobs. Only a key's SHA-256 is stored; the key is shown once, at creation.

Each key also has a callback signing secret, which signs the completion callbacks of its jobs (HMAC-SHA256, see
``schemas.callbacks``). A MAC needs the secret itself, so that one is stored as it is; ``image-keys`` shows it at
creation and makes a new one on ``rotate-callback-secret``.

Keys are 32 random bytes, so a plain SHA-256 is enough to make the stored value useless to a reader of the
database (a slow password hash protects guessable secrets, which these are not). Every request looks its key up,
so a revoked key stops working at once, in every API process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.tables import api_keys_table

KEY_PREFIX = "ipk_"
CALLBACK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    """What a key may do: submit jobs, read its jobs, or everything (any job, readiness details)."""

    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    roles: frozenset[Role]
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyNameTaken(Exception):
    """A key (perhaps revoked) already has this name: names identify keys in logs and in revocation."""


class ApiKeyStore:
    """The ``api_keys`` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, name: str, roles: frozenset[Role]) -> tuple[ApiKey, str]:
        """A new key and its secret (to hand to the client; it is not stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        callback_secret = new_callback_secret()
        key = ApiKey(str(uuid.uuid4()), name, roles, dt.datetime.now(dt.UTC), None)
        async with self._engine.begin() as connection:
            if (await connection.execute(select(api_keys_table.c.key_id).where(api_keys_table.c.name == name))).first():
                raise KeyNameTaken(f"a key named {name!r} exists already")
            await connection.execute(
                api_keys_table.insert().values(
                    key_id=key.key_id,
                    name=name,
                    secret_sha256=secret_digest(secret),
                    roles=",".join(sorted(roles)),
                    created_at=key.created_at,
                    callback_secret=callback_secret,
                )
            )
        return key, secret

    async def find(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, unless it is unknown or revoked."""
        statement = select(api_keys_table).where(api_keys_table.c.secret_sha256 == secret_digest(secret))
        async with self._engine.connect() as connection:
            row = (await connection.execute(statement)).mappings().first()
        if row is None or row["revoked_at"] is not None:
            return None
        return _key_from_row(row)

    async def list(self) -> list[ApiKey]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(api_keys_table).order_by(api_keys_table.c.name))).mappings().all()
        return [_key_from_row(row) for row in rows]

    async def callback_secret(self, key_id: str) -> str | None:
        """The secret that signs the callbacks of key ``key_id``'s jobs; None for an unknown key."""
        statement = select(api_keys_table.c.callback_secret).where(api_keys_table.c.key_id == key_id)
        async with self._engine.connect() as connection:
            secret: str | None = (await connection.execute(statement)).scalar_one_or_none()
        return secret

    async def rotate_callback_secret(self, name: str) -> str | None:
        """Give the active key ``name`` a new callback signing secret and return it; None if there is no such key.

        Callbacks signed from now on use it, retries of earlier ones too: receivers must switch at once.
        """
        secret = new_callback_secret()
        statement = (
            update(api_keys_table)
            .where(api_keys_table.c.name == name, api_keys_table.c.revoked_at.is_(None))
            .values(callback_secret=secret)
        )
        async with self._engine.begin() as connection:
            return secret if (await connection.execute(statement)).rowcount else None

    async def revoke(self, name: str) -> bool:
        """Revoke the key named ``name``; False if there is no such active key."""
        statement = (
            update(api_keys_table)
            .where(api_keys_table.c.name == name, api_keys_table.c.revoked_at.is_(None))
            .values(revoked_at=dt.datetime.now(dt.UTC))
        )
        async with self._engine.begin() as connection:
            return bool((await connection.execute(statement)).rowcount)


def new_callback_secret() -> str:
    return CALLBACK_SECRET_PREFIX + secrets.token_urlsafe(32)


def _key_from_row(row: object) -> ApiKey:
    values = dict(row)  # type: ignore[call-overload]
    return ApiKey(
        key_id=values["key_id"],
        name=values["name"],
        roles=frozenset(Role(role) for role in values["roles"].split(",") if role),
        created_at=values["created_at"],
        revoked_at=values["revoked_at"],
    )
