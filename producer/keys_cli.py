"""``image-keys``: create, list and revoke the API keys clients send as ``Authorization: Bearer <key>``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from core.api_keys import ApiKeyStore, KeyNameTaken, Role
from core.clients import one_line
from core.jobs import JobStore
from core.schema import SchemaMismatch, require_current
from core.settings import InvalidSettings, Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="image-keys",
        description="Manage the API's keys in the database of DATABASE_URL (the API's). A key is shown once.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create", help="make a key and print it (once) on stdout, and its callback signing secret on stderr"
    )
    create.add_argument("--name", required=True, help="who or what holds it (unique)")
    create.add_argument(
        "--roles",
        default="submit,read",
        help=f"comma-separated, of {', '.join(Role)} (default: submit,read; admin may do everything)",
    )
    commands.add_parser("list", help="every key with its roles, and whether it is revoked")
    revoke = commands.add_parser("revoke", help="stop a key at once")
    revoke.add_argument("name")
    rotate = commands.add_parser(
        "rotate-callback-secret",
        help="give a key a new secret for signing its jobs' completion callbacks, and print it (the old one stops "
        "at once)",
    )
    rotate.add_argument("name")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        roles = frozenset(Role(role.strip()) for role in args.roles.split(",")) if args.command == "create" else None
    except InvalidSettings as exc:
        print(f"image-keys: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"image-keys: --roles: {exc}; use {', '.join(Role)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings, args, roles))
    except (SQLAlchemyError, OSError, KeyNameTaken) as exc:
        print(f"image-keys: {one_line(exc)}", file=sys.stderr)
        return 1
    except SchemaMismatch as exc:
        print(f"image-keys: {exc}", file=sys.stderr)
        return 1


async def _run(settings: Settings, args: argparse.Namespace, roles: frozenset[Role] | None) -> int:
    jobs = JobStore.from_url(settings.database_url)
    try:
        await require_current(jobs.engine)
        keys = ApiKeyStore(jobs.engine)
        if args.command == "create":
            assert roles is not None
            key, secret = await keys.create(args.name, roles)
            print(secret)
            # On stderr: `KEY=$(image-keys create ...)` keeps taking the key alone.
            print(f"callback signing secret: {await keys.callback_secret(key.key_id)}", file=sys.stderr)
        elif args.command == "list":
            for key in await keys.list():
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                print(f"{key.name}\t{','.join(sorted(key.roles))}\t{state}")
        elif args.command == "rotate-callback-secret":
            callback_secret = await keys.rotate_callback_secret(args.name)
            if callback_secret is None:
                print(f"image-keys: no active key named {args.name!r}", file=sys.stderr)
                return 1
            print(callback_secret)
        elif not await keys.revoke(args.name):
            print(f"image-keys: no active key named {args.name!r}", file=sys.stderr)
            return 1
        return 0
    finally:
        await jobs.close()


if __name__ == "__main__":
    sys.exit(main())
