"""trackerctl: the admin command line (migrations, users, service tokens).

It talks to PostgreSQL directly, as the operator (an administrator), through the same use
cases as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from adapters.postgres.migrator import MigrationError, ensure_database, migrate
from domain.access import Principal, Role
from domain.errors import DomainError
from servers.config import ConfigError, Settings, from_sources, parser
from servers.container import Container
from usecases.access import AccessUseCases, NewUser

ROLES = {"client-admin": Role.CLIENT_ADMIN, "viewer": Role.VIEWER}


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.create_database and await ensure_database(settings.database_url):
        print("database created")
    conn = await asyncpg.connect(settings.database_url)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


def _password(args: argparse.Namespace) -> str:
    """From standard input (--password-stdin), else prompted twice; never from argv."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("passwords differ")
    return first


async def _with_access(settings: Settings, action: Any) -> int:
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        uc: AccessUseCases = await container.access_usecases.async_()
        return int(await action(uc))
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


async def _user(settings: Settings, args: argparse.Namespace) -> int:
    system = Principal.system()

    async def act(uc: AccessUseCases) -> int:
        if args.user_command in ("create-admin", "create"):
            memberships = {}
            if args.user_command == "create":
                memberships = {uuid.UUID(c): ROLES[args.role] for c in args.client}
            user = await uc.create_user(
                system,
                NewUser(
                    email=args.email,
                    password=_password(args),
                    display_name=args.name,
                    admin=args.user_command == "create-admin",
                    memberships=memberships,
                ),
            )
            print(f"user {user.email} created: id {user.id}, admin {user.admin}")
        elif args.user_command in ("grant", "revoke"):
            target = await uc.find_user_by_email(system, args.email)
            role = ROLES[args.role] if args.user_command == "grant" else None
            user = await uc.set_client_access(system, target.id, uuid.UUID(args.client), role)
            print(
                f"user {user.email}: "
                + ", ".join(f"{c} {r.value}" for c, r in user.memberships.items())
                or "no client access"
            )
        return 0

    return await _with_access(settings, act)


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    async def act(uc: AccessUseCases) -> int:
        token, user = await uc.mint_service_token(
            Principal.system(), args.email, timedelta(days=args.ttl_days)
        )
        print(token)
        print(f"# service token for {user.email}, valid {args.ttl_days} days", file=sys.stderr)
        return 0

    return await _with_access(settings, act)


def build_parser() -> argparse.ArgumentParser:
    settings = parser("settings")
    top = argparse.ArgumentParser(prog="trackerctl", description="Tracker Services admin CLI")
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, into: Any = sub) -> argparse.ArgumentParser:
        return into.add_parser(  # type: ignore[no-any-return]
            name, help=help, parents=[settings], add_help=False, conflict_handler="resolve"
        )

    m = command("migrate", "apply database migrations")
    m.add_argument(
        "--create-database",
        action="store_true",
        help="create the database first if it does not exist",
    )

    user = sub.add_parser("user", help="users and their access to clients")
    usub = user.add_subparsers(dest="user_command", required=True)
    for name, help in (
        ("create-admin", "create an administrator"),
        ("create", "create a user with access to clients"),
    ):
        p = command(name, help, usub)
        p.add_argument("--email", required=True)
        p.add_argument("--name", default="", help="display name")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input instead of prompting",
        )
        if name == "create":
            p.add_argument("--client", action="append", required=True, metavar="CLIENT_ID")
            p.add_argument("--role", choices=sorted(ROLES), default="viewer")
    for name, help in (
        ("grant", "give a user a role in a client"),
        ("revoke", "take a user's access to a client away"),
    ):
        p = command(name, help, usub)
        p.add_argument("--email", required=True)
        p.add_argument("--client", required=True, metavar="CLIENT_ID")
        if name == "grant":
            p.add_argument("--role", choices=sorted(ROLES), required=True)

    token = sub.add_parser("token", help="service tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    mint = command("mint", "print a long-lived access token for a (service) user", tsub)
    mint.add_argument("--email", required=True)
    mint.add_argument("--ttl-days", type=int, default=365)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = from_sources(vars(args), os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    run = {"migrate": _migrate, "user": _user, "token": _token}[args.command]
    try:
        return asyncio.run(run(settings, args))
    except (
        OSError,
        asyncpg.PostgresError,
        MigrationError,
        ConfigError,
        ValueError,
        DomainError,
    ) as exc:
        print(f"trackerctl {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
