"""trackerctl: the admin command line (database migrations for now)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg

from adapters.postgres.migrator import MigrationError, ensure_database, migrate
from servers.config import ConfigError, Settings, from_sources, parser


async def _migrate(settings: Settings, create_database: bool) -> int:
    if create_database and await ensure_database(settings.database_url):
        print("database created")
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="trackerctl", description="Tracker Services admin CLI")
    sub = top.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "migrate",
        help="apply database migrations",
        parents=[parser("settings")],
        add_help=False,
        conflict_handler="resolve",
    )
    m.add_argument(
        "--create-database",
        action="store_true",
        help="create the database first if it does not exist",
    )
    args = top.parse_args(argv)
    try:
        settings = from_sources(vars(args), os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "migrate":
            return asyncio.run(_migrate(settings, args.create_database))
    except (OSError, asyncpg.PostgresError, MigrationError) as exc:
        print(f"trackerctl {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
