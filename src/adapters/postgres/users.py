"""Users with their memberships, and refresh tokens."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from domain.access import RefreshToken, Role, User
from domain.errors import AlreadyExists, NotFound
from domain.pagination import Page, PageRequest, cursor_id
from domain.ports.access import UserFilter

_USER_COLUMNS = (
    "u.id, u.email, u.display_name, u.password_hash, u.admin, u.create_time, u.update_time, "
    "u.token_version, "
    "coalesce((SELECT array_agg(m.client_id::text || '=' || m.role) FROM memberships m "
    "WHERE m.user_id = u.id), '{}') AS memberships"
)


def _user(r: asyncpg.Record) -> User:
    memberships = {}
    for item in r["memberships"]:
        client, role = item.split("=", 1)
        memberships[uuid.UUID(client)] = Role(role)
    return User(
        id=r["id"],
        email=r["email"],
        display_name=r["display_name"],
        password_hash=r["password_hash"],
        admin=r["admin"],
        memberships=memberships,
        create_time=r["create_time"],
        update_time=r["update_time"],
        token_version=r["token_version"],
    )


class PostgresUserRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def _write_memberships(self, user: User) -> None:
        await self._conn.execute("DELETE FROM memberships WHERE user_id = $1", user.id)
        if user.memberships:
            try:
                await self._conn.executemany(
                    "INSERT INTO memberships (user_id, client_id, role) VALUES ($1, $2, $3)",
                    [(user.id, c, r.value) for c, r in user.memberships.items()],
                )
            except asyncpg.ForeignKeyViolationError:
                raise NotFound("client", "of a membership") from None

    async def add(self, user: User) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO users (id, email, display_name, password_hash, admin, create_time,"
                " update_time, token_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                user.id,
                user.email,
                user.display_name,
                user.password_hash,
                user.admin,
                user.create_time,
                user.update_time,
                user.token_version,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("user", "email", user.email) from None
        await self._write_memberships(user)

    async def get(self, user_id: uuid.UUID) -> User:
        row = await self._conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = $1", user_id
        )
        if row is None:
            raise NotFound("user", str(user_id))
        return _user(row)

    async def find_by_email(self, email: str) -> User | None:
        row = await self._conn.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.email = $1", email
        )
        return None if row is None else _user(row)

    async def update(self, user: User) -> None:
        status = await self._conn.execute(
            # A writer that read the user before the latest password change (an older token
            # version) cannot put the old password back, nor lower the version.
            "UPDATE users SET display_name = $2, admin = $4, update_time = $5, "
            "password_hash = CASE WHEN $6 >= token_version THEN $3 ELSE password_hash END, "
            "token_version = GREATEST(token_version, $6) WHERE id = $1",
            user.id,
            user.display_name,
            user.password_hash,
            user.admin,
            user.update_time,
            user.token_version,
        )
        if status.endswith(" 0"):
            raise NotFound("user", str(user.id))
        await self._write_memberships(user)

    async def delete(self, user_id: uuid.UUID) -> None:
        if (
            await self._conn.fetchval("DELETE FROM users WHERE id = $1 RETURNING id", user_id)
            is None
        ):
            raise NotFound("user", str(user_id))

    async def list(self, filter: UserFilter, page: PageRequest) -> Page[User]:
        where: list[str] = []
        args: list[Any] = []
        if filter.visible_clients is not None:
            args.append(list(filter.visible_clients))
            where.append(
                "EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id "
                f"AND m.client_id = ANY(${len(args)}::uuid[]))"
            )
        if page.after is not None:
            args.append(cursor_id(page.after))
            where.append(f"u.id > ${len(args)}")
        args.append(page.size + 1)
        rows = await self._conn.fetch(
            f"SELECT {_USER_COLUMNS} FROM users u"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY u.id LIMIT ${len(args)}",
            *args,
        )
        items = [_user(r) for r in rows[: page.size]]
        return Page(items, str(items[-1].id) if len(rows) > page.size else None)


class PostgresRefreshTokenRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, token: RefreshToken) -> None:
        """A clash or a missing user inserts nothing and is told apart afterwards, so the
        unit of work's transaction goes on (no violation aborts it)."""
        try:
            done = await self._conn.execute(
                "INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at) "
                "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2) "
                "ON CONFLICT DO NOTHING",
                token.id,
                token.user_id,
                token.token_hash,
                token.expires_at,
            )
        except asyncpg.ForeignKeyViolationError:  # the user went meanwhile
            done = "INSERT 0 0"
        if done == "INSERT 0 1":
            return
        row = await self._conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_known, "
            "EXISTS (SELECT 1 FROM refresh_tokens WHERE id = $2) AS id_taken",
            token.user_id,
            token.id,
        )
        if row is None or not row["user_known"]:
            raise NotFound(
                "parent of refresh token",
                f'Key (user_id)=({token.user_id}) is not present in table "users".',
            )
        if row["id_taken"]:
            raise AlreadyExists("refresh token", "id", str(token.id))
        raise AlreadyExists("refresh token", "token_hash", token.token_hash.hex())

    async def find(self, token_hash: bytes) -> RefreshToken | None:
        row = await self._conn.fetchrow(
            "SELECT id, user_id, token_hash, expires_at, revoked_at IS NOT NULL AS revoked "
            "FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            token_hash,
        )
        if row is None:
            return None
        return RefreshToken(
            id=row["id"],
            user_id=row["user_id"],
            token_hash=bytes(row["token_hash"]),
            expires_at=row["expires_at"],
            revoked=row["revoked"],
        )

    async def revoke(self, token_id: uuid.UUID) -> None:
        await self._conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            token_id,
        )

    async def revoke_all(self, user_id: uuid.UUID) -> None:
        await self._conn.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 "
            "AND revoked_at IS NULL",
            user_id,
        )
