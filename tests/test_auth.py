"""API keys: nobody without one gets in, a key sees only its own jobs, roles bound what it may do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.api_keys import ApiKeyStore, Role
from core.jobs import JobStore
from core.schema import upgrade
from core.settings import Settings
from tests.support.api import api_client
from tests.support.database import migrated_sqlite
from tests.support.settings import make_settings

pytestmark = pytest.mark.integration

JOB = {"url": "https://example.com/a.png", "filter": "blur"}


async def new_key(keys: ApiKeyStore, name: str, *roles: Role) -> dict[str, str]:
    _, secret = await keys.create(name, frozenset(roles))
    return {"Authorization": f"Bearer {secret}"}


async def test_without_a_key_nothing_is_served(secured: Settings, keys: ApiKeyStore) -> None:
    alice = await new_key(keys, "alice", Role.SUBMIT, Role.READ)
    async with api_client(secured) as api:
        accepted = await api.post("/images", json=JOB, headers=alice)
        assert accepted.status_code == 202, accepted.text
        for response in (
            await api.post("/images", json=JOB),
            await api.get(accepted.json()["status_url"]),
            await api.get(accepted.json()["result_url"]),
            await api.post("/images", json=JOB, headers={"Authorization": "Bearer ipk_not-a-key"}),
        ):
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert (await api.get("/healthz")).status_code == 200, "liveness stays open"


async def test_a_key_sees_only_its_own_jobs_and_roles_bound_it(secured: Settings, keys: ApiKeyStore) -> None:
    alice = await new_key(keys, "alice", Role.SUBMIT, Role.READ)
    bob = await new_key(keys, "bob", Role.SUBMIT, Role.READ)
    reader = await new_key(keys, "dashboard", Role.READ)
    admin = await new_key(keys, "ops", Role.ADMIN)
    async with api_client(secured) as api:
        job = (await api.post("/images", json=JOB, headers=alice)).json()
        assert (await api.get(job["status_url"], headers=alice)).status_code == 200
        assert (await api.get(job["status_url"], headers=bob)).status_code == 404, "another key's job is not there"
        assert (await api.get(job["status_url"], headers=admin)).status_code == 200
        refused = await api.post("/images", json=JOB, headers=reader)
        assert refused.status_code == 403, refused.text

        ready = await api.get("/readyz")
        assert set(ready.json().values()) <= {"ok", "unavailable"}, "details only for an admin"


async def test_idempotency_keys_are_per_api_key_and_a_revoked_key_stops_at_once(
    secured: Settings, keys: ApiKeyStore
) -> None:
    alice = await new_key(keys, "alice", Role.SUBMIT, Role.READ)
    bob = await new_key(keys, "bob", Role.SUBMIT, Role.READ)
    async with api_client(secured) as api:
        same_key = {"Idempotency-Key": "order-1"}
        first = await api.post("/images", json=JOB, headers=alice | same_key)
        second = await api.post("/images", json={**JOB, "filter": "sepia"}, headers=bob | same_key)
        assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
        assert first.json()["id"] != second.json()["id"], "one client's Idempotency-Key never names another's job"

        assert await keys.revoke("alice")
        assert (await api.get(first.json()["status_url"], headers=alice)).status_code == 401


async def test_a_key_over_its_rate_gets_429_with_retry_after(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, tmp_path, auth_disabled=False, rate_limit="3/minute")
    jobs = JobStore.from_url(settings.database_url)
    await upgrade(jobs.engine)
    try:
        alice = await new_key(ApiKeyStore(jobs.engine), "alice", Role.READ)
        bob = await new_key(ApiKeyStore(jobs.engine), "bob", Role.READ)
        async with api_client(settings) as api:
            statuses = [
                (await api.get("/images/0b7c0000-0000-4000-8000-000000000000", headers=alice)) for _ in range(4)
            ]
            other = await api.get("/images/0b7c0000-0000-4000-8000-000000000000", headers=bob)
    finally:
        await jobs.close()
    assert [answer.status_code for answer in statuses] == [404, 404, 404, 429]
    assert 1 <= int(statuses[3].headers["retry-after"]) <= 60
    assert other.status_code == 404, "each key has its own window"


def test_the_keys_command_creates_lists_and_revokes(tmp_path: Path) -> None:
    executable = shutil.which("image-keys", path=str(Path(sys.executable).parent))
    assert executable is not None
    env = os.environ | {"DATABASE_URL": f"sqlite:///{migrated_sqlite(tmp_path / 'api.db')}"}

    def keys(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([executable, *argv], env=env, capture_output=True, text=True, timeout=60, check=False)

    created = keys("create", "--name", "ci", "--roles", "submit,read")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ipk_")
    assert keys("create", "--name", "ci").returncode == 1, "names are unique"
    assert keys("create", "--name", "x", "--roles", "root").returncode == 2
    assert keys("list").stdout == "ci\tread,submit\tactive\n"
    assert keys("revoke", "ci").returncode == 0
    assert "revoked" in keys("list").stdout
    assert keys("revoke", "ci").returncode == 1, "already revoked"
    assert created.stdout.strip() not in (tmp_path / "api.db").read_bytes().decode(errors="replace")


async def test_the_openapi_document_asks_for_a_key_exactly_when_one_is_needed(
    secured: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with api_client(secured) as api:
        schema = (await api.get("/openapi.json")).json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert schema["paths"]["/images"]["post"]["security"] == [{"HTTPBearer": []}]
    async with api_client(make_settings(kafka_bootstrap, tmp_path / "open")) as api:
        schema = (await api.get("/openapi.json")).json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "security" not in schema["paths"]["/images"]["post"]
