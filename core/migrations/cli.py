"""``image-migrate``: bring the job database of ``DATABASE_URL`` to this version's schema, or only check it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from core.clients import one_line
from core.database import DatabaseMissing, create_engine
from core.schema import MigrationError, SchemaState, schema_state, upgrade
from core.settings import InvalidSettings, Settings, load_settings

PROG = "image-migrate"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Migrate the job database of DATABASE_URL (the API's and the workers') to the schema this version "
            "needs; a database made before migrations is adopted. Run it before starting a new release: the "
            "API, the workers and the tools refuse to start on a database at another schema."
        ),
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and say where the schema is if it is not current"
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except InvalidSettings as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_check(settings) if args.check else _upgrade(settings))
    except (SQLAlchemyError, OSError, DatabaseMissing, MigrationError) as exc:
        print(f"{PROG}: {one_line(exc) if isinstance(exc, SQLAlchemyError | OSError) else exc}", file=sys.stderr)
        return 1


async def _check(settings: Settings) -> int:
    engine = create_engine(settings.database_url, create=False)  # a check must not leave an empty file behind
    try:
        state = await schema_state(engine)
    finally:
        await engine.dispose()
    problem = state.problem()
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 1
    print(f"{PROG}: {_where(engine.url.render_as_string(hide_password=True))} is at schema {state.head} (current)")
    return 0


async def _upgrade(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        before, after = await upgrade(engine)
    finally:
        await engine.dispose()
    where = _where(engine.url.render_as_string(hide_password=True))
    if before.current:
        print(f"{PROG}: {where} is at schema {after.revision} already")
    else:
        print(f"{PROG}: {where} migrated from {_describe(before)} to schema {after.revision}")
    return 0


def _where(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("+asyncpg", "")


def _describe(state: SchemaState) -> str:
    if state.revision is not None:
        return f"schema {state.revision}"
    return "its pre-migration tables" if state.legacy else "an empty database"


if __name__ == "__main__":
    sys.exit(main())
