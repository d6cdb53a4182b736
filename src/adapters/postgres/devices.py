"""PostgreSQL storage of the devices capability (migrations 0019 and 0020): device types,
firmware releases and combinations, profiles, devices, rollouts.

Lock order (see ``usecases.devices``): a device row, then its rollout row, then
rollout-device rows. The per-group throttle is one conditional UPDATE of a counter row, so
two check-ins can never both take the last slot of a group.
"""

from __future__ import annotations

import base64
import builtins
import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from domain.devices import (
    Device,
    DeviceProfile,
    DeviceRolloutState,
    PhaseCounts,
    ProfileScope,
    Rollout,
    RolloutDevice,
    RolloutPolicy,
    RolloutState,
)
from domain.errors import AlreadyExists, NotFound
from domain.firmware import (
    Combination,
    CombinationState,
    DeviceType,
    Release,
    Requirement,
    Step,
    Version,
    VersionRange,
)
from domain.model import SealedSecret
from domain.pagination import Page, PageRequest, cursor_id, cursor_parts
from domain.ports.devices import DeviceSelection, RolloutFilter, StoredCombination, Visible

_ACTIVE = ("RUNNING", "PAUSED")


def _combo_json(c: Combination) -> str:
    return json.dumps({k: str(v) for k, v in c.items}, sort_keys=True)


def _combo(raw: str | dict[str, str]) -> Combination:
    d = json.loads(raw) if isinstance(raw, str) else raw
    return Combination.of({k: Version.parse(v) for k, v in d.items()})


def _visible_sql(v: Visible, args: list[Any], column: str = "client_id") -> list[str]:
    where = []
    if v.clients is not None:
        args.append(list(v.clients))
        where.append(f"{column} = ANY(${len(args)}::uuid[])")
    if v.client_id is not None:
        args.append(v.client_id)
        where.append(f"{column} = ${len(args)}")
    return where


async def _page(
    conn: asyncpg.Connection,
    sql: str,
    where: list[str],
    args: list[Any],
    page: PageRequest,
    key: str = "id",
) -> tuple[list[asyncpg.Record], str | None]:
    if page.after is not None:
        args.append(cursor_id(page.after))
        where.append(f"{key} > ${len(args)}")
    args.append(page.size + 1)
    rows = await conn.fetch(
        sql
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY {key} LIMIT ${len(args)}",
        *args,
    )
    nxt = str(rows[page.size - 1][key]) if len(rows) > page.size else None
    return list(rows[: page.size]), nxt


class PostgresDeviceTypeRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, t: DeviceType) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO device_types (id, client_id, name, components)"
                " VALUES ($1, $2, $3, $4)",
                t.id,
                t.client_id,
                t.name,
                list(t.components),
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(t.KIND, "name", t.name) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("client", str(t.client_id)) from None

    @staticmethod
    def _from(r: asyncpg.Record) -> DeviceType:
        return DeviceType(r["id"], r["client_id"], r["name"], tuple(r["components"]))

    async def get(self, type_id: uuid.UUID) -> DeviceType:
        r = await self._conn.fetchrow("SELECT * FROM device_types WHERE id = $1", type_id)
        if r is None:
            raise NotFound(DeviceType.KIND, str(type_id))
        return self._from(r)

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceType]:
        args: list[Any] = []
        rows, nxt = await _page(
            self._conn, "SELECT * FROM device_types", _visible_sql(visible, args), args, page
        )
        return Page([self._from(r) for r in rows], nxt)


class PostgresFirmwareRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_release(self, type_id: uuid.UUID, release: Release, notes: str) -> None:
        requires = json.dumps([[q.component, q.range.text] for q in release.requires])
        version = str(
            Version(
                release.version.major,
                release.version.minor,
                release.version.patch,
                release.version.pre,
            )
        )
        try:
            await self._conn.execute(
                "INSERT INTO firmware_releases"
                " (device_type_id, component, version, requires, notes)"
                " VALUES ($1, $2, $3, $4, $5)",
                type_id,
                release.component,
                version,
                requires,
                notes,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("firmware release", "version", version) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(DeviceType.KIND, str(type_id)) from None

    async def releases(self, type_id: uuid.UUID) -> builtins.list[Release]:
        rows = await self._conn.fetch(
            "SELECT component, version, requires FROM firmware_releases WHERE device_type_id = $1",
            type_id,
        )
        return [
            Release(
                r["component"],
                Version.parse(r["version"]),
                tuple(Requirement(c, VersionRange.parse(t)) for c, t in json.loads(r["requires"])),
            )
            for r in rows
        ]

    async def set_combinations(
        self,
        type_id: uuid.UUID,
        combos: Sequence[Combination],
        state: CombinationState,
        only_new: bool,
        now: datetime,
    ) -> int:
        unique = list(dict.fromkeys(combos))
        conflict = (
            "DO NOTHING"
            if only_new
            else "DO UPDATE SET state = EXCLUDED.state, update_time = EXCLUDED.update_time "
            "WHERE firmware_combinations.state <> EXCLUDED.state"
        )
        n = await self._conn.fetchval(
            "WITH ins AS (INSERT INTO firmware_combinations "
            "(device_type_id, ckey, versions, state, update_time) "
            "SELECT $1, k, v::jsonb, $4, $5 FROM unnest($2::text[], $3::text[]) AS u(k, v) "
            f"ON CONFLICT (device_type_id, ckey) {conflict} RETURNING 1) SELECT count(*) FROM ins",
            type_id,
            [str(c) for c in unique],
            [_combo_json(c) for c in unique],
            state.value,
            now,
        )
        return int(n)

    async def combinations(
        self, type_id: uuid.UUID, state: CombinationState | None
    ) -> builtins.list[StoredCombination]:
        rows = await self._conn.fetch(
            "SELECT versions::text AS v, state, update_time FROM firmware_combinations "
            "WHERE device_type_id = $1 AND ($2::text IS NULL OR state = $2) ORDER BY ckey",
            type_id,
            state.value if state else None,
        )
        return [
            StoredCombination(_combo(r["v"]), CombinationState(r["state"]), r["update_time"])
            for r in rows
        ]


def _secrets_json(secrets: dict[str, SealedSecret] | Any) -> str:
    return json.dumps(
        {k: [s.kek_id, base64.b64encode(s.ciphertext).decode()] for k, s in secrets.items()}
    )


class PostgresDeviceProfileRepository:
    _COLS = (
        "id, client_id, name, scope, scope_id, device_type_id, vals::text AS vals, "
        "secrets::text AS secrets, services::text AS services, version, create_time, update_time"
    )

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @staticmethod
    def _from(r: asyncpg.Record) -> DeviceProfile:
        return DeviceProfile(
            id=r["id"],
            client_id=r["client_id"],
            name=r["name"],
            scope=ProfileScope(r["scope"]),
            scope_id=r["scope_id"],
            device_type_id=r["device_type_id"],
            values=json.loads(r["vals"]),
            secrets={
                k: SealedSecret(kek, base64.b64decode(ct))
                for k, (kek, ct) in json.loads(r["secrets"]).items()
            },
            services=json.loads(r["services"]),
            version=r["version"],
            create_time=r["create_time"],
            update_time=r["update_time"],
        )

    async def add(self, p: DeviceProfile) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO device_profiles (id, client_id, name, scope, scope_id, device_type_id,"
                " vals, secrets, services, version, create_time, update_time)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                p.id,
                p.client_id,
                p.name,
                p.scope.value,
                p.scope_id,
                p.device_type_id,
                json.dumps(dict(p.values)),
                _secrets_json(p.secrets),
                json.dumps(dict(p.services)),
                p.version,
                p.create_time,
                p.update_time,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(p.KIND, "scope_id", str(p.scope_id)) from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("client", str(p.client_id)) from None

    async def get(self, profile_id: uuid.UUID) -> DeviceProfile:
        r = await self._conn.fetchrow(
            f"SELECT {self._COLS} FROM device_profiles WHERE id = $1", profile_id
        )
        if r is None:
            raise NotFound(DeviceProfile.KIND, str(profile_id))
        return self._from(r)

    async def update(self, p: DeviceProfile) -> None:
        done = await self._conn.fetchval(
            "UPDATE device_profiles SET name = $2, vals = $3, secrets = $4, services = $5,"
            " version = $6, update_time = $7 WHERE id = $1 RETURNING id",
            p.id,
            p.name,
            json.dumps(dict(p.values)),
            _secrets_json(p.secrets),
            json.dumps(dict(p.services)),
            p.version,
            p.update_time,
        )
        if done is None:
            raise NotFound(p.KIND, str(p.id))

    async def applicable(
        self,
        client_id: uuid.UUID,
        production_run_id: uuid.UUID | None,
        location_id: uuid.UUID | None,
    ) -> builtins.list[DeviceProfile]:
        rows = await self._conn.fetch(
            f"SELECT {self._COLS} FROM device_profiles WHERE client_id = $1 AND ("
            "(scope = 1 AND scope_id = $1) OR (scope = 2 AND scope_id = $2) "
            "OR (scope = 3 AND scope_id = $3))",
            client_id,
            production_run_id,
            location_id,
        )
        return [self._from(r) for r in rows]

    async def list(self, visible: Visible, page: PageRequest) -> Page[DeviceProfile]:
        args: list[Any] = []
        rows, nxt = await _page(
            self._conn,
            f"SELECT {self._COLS} FROM device_profiles",
            _visible_sql(visible, args),
            args,
            page,
        )
        return Page([self._from(r) for r in rows], nxt)


class PostgresDeviceRepository:
    _COLS = (
        "id, client_id, device_type_id, serial, group_key, production_run_id, location_id,"
        " tracker_id, versions::text AS versions, last_check_in, health::text AS health,"
        " create_time, update_time"
    )

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @staticmethod
    def _from(r: asyncpg.Record) -> Device:
        return Device(
            id=r["id"],
            client_id=r["client_id"],
            device_type_id=r["device_type_id"],
            serial=r["serial"],
            group_key=r["group_key"],
            production_run_id=r["production_run_id"],
            location_id=r["location_id"],
            tracker_id=r["tracker_id"],
            versions=_combo(r["versions"]) if r["versions"] else None,
            last_check_in=r["last_check_in"],
            health=json.loads(r["health"]),
            create_time=r["create_time"],
            update_time=r["update_time"],
        )

    async def add(self, d: Device) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO devices (id, client_id, device_type_id, serial, group_key,"
                " production_run_id, location_id, tracker_id, versions, last_check_in, health,"
                " create_time, update_time)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                d.id,
                d.client_id,
                d.device_type_id,
                d.serial,
                d.group_key,
                d.production_run_id,
                d.location_id,
                d.tracker_id,
                _combo_json(d.versions) if d.versions else None,
                d.last_check_in,
                json.dumps(dict(d.health)),
                d.create_time,
                d.update_time,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(d.KIND, "serial", d.serial) from None
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("parent of device", exc.constraint_name or "") from None

    async def get(self, device_id: uuid.UUID, *, for_update: bool = False) -> Device:
        r = await self._conn.fetchrow(
            f"SELECT {self._COLS} FROM devices WHERE id = $1"
            + (" FOR UPDATE" if for_update else ""),
            device_id,
        )
        if r is None:
            raise NotFound(Device.KIND, str(device_id))
        return self._from(r)

    async def update(self, d: Device) -> None:
        done = await self._conn.fetchval(
            "UPDATE devices SET versions = $2, last_check_in = $3, health = $4, group_key = $5,"
            " production_run_id = $6, location_id = $7, update_time = $8"
            " WHERE id = $1 RETURNING id",
            d.id,
            _combo_json(d.versions) if d.versions else None,
            d.last_check_in,
            json.dumps(dict(d.health)),
            d.group_key,
            d.production_run_id,
            d.location_id,
            d.update_time,
        )
        if done is None:
            raise NotFound(d.KIND, str(d.id))

    async def list(
        self, visible: Visible, device_type_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Device]:
        args: list[Any] = []
        where = _visible_sql(visible, args)
        if device_type_id is not None:
            args.append(device_type_id)
            where.append(f"device_type_id = ${len(args)}")
        rows, nxt = await _page(self._conn, f"SELECT {self._COLS} FROM devices", where, args, page)
        return Page([self._from(r) for r in rows], nxt)

    async def select(self, s: DeviceSelection) -> builtins.list[tuple[uuid.UUID, str]]:
        rows = await self._conn.fetch(
            "SELECT id, group_key FROM devices WHERE client_id = $1 AND device_type_id = $2"
            " AND (cardinality($3::uuid[]) = 0 OR production_run_id = ANY($3))"
            " AND (cardinality($4::text[]) = 0 OR group_key = ANY($4))"
            " AND (cardinality($5::uuid[]) = 0 OR id = ANY($5)) ORDER BY id",
            s.client_id,
            s.device_type_id,
            list(s.production_run_ids),
            list(s.group_keys),
            list(s.device_ids),
        )
        return [(r["id"], r["group_key"]) for r in rows]


def _policy_json(p: RolloutPolicy) -> str:
    return json.dumps(
        {
            "phases": list(p.phases),
            "max_in_flight_per_group": p.max_in_flight_per_group,
            "advance_share": p.advance_share,
            "pause_failure_rate": p.pause_failure_rate,
            "abort_failure_rate": p.abort_failure_rate,
            "min_outcomes": p.min_outcomes,
            "max_attempts": p.max_attempts,
            "step_timeout_s": p.step_timeout.total_seconds(),
        }
    )


def _policy(raw: str) -> RolloutPolicy:
    d = json.loads(raw)
    return RolloutPolicy(
        phases=tuple(d["phases"]),
        max_in_flight_per_group=d["max_in_flight_per_group"],
        advance_share=d["advance_share"],
        pause_failure_rate=d["pause_failure_rate"],
        abort_failure_rate=d["abort_failure_rate"],
        min_outcomes=d["min_outcomes"],
        max_attempts=d["max_attempts"],
        step_timeout=timedelta(seconds=d["step_timeout_s"]),
    )


def _step_json(s: Step | None) -> str | None:
    if s is None:
        return None
    return json.dumps(
        {
            "component": s.component,
            "from": str(s.from_version),
            "to": str(s.to_version),
            "result": json.loads(_combo_json(s.result)),
        }
    )


def _step(raw: str | None) -> Step | None:
    if raw is None:
        return None
    d = json.loads(raw)
    return Step(
        d["component"], Version.parse(d["from"]), Version.parse(d["to"]), _combo(d["result"])
    )


class PostgresRolloutRepository:
    _COLS = (
        "id, client_id, device_type_id, name, target::text AS target, policy::text AS policy,"
        " state, phase, phase_succeeded, phase_failed, reason, create_time, update_time"
    )
    _RD = (
        "rollout_id, device_id, group_key, bucket, state, attempts, step::text AS step,"
        " step_time, last_error, update_time"
    )

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @staticmethod
    def _from(r: asyncpg.Record) -> Rollout:
        return Rollout(
            id=r["id"],
            client_id=r["client_id"],
            device_type_id=r["device_type_id"],
            name=r["name"],
            target=_combo(r["target"]),
            policy=_policy(r["policy"]),
            state=RolloutState(r["state"]),
            phase=r["phase"],
            phase_succeeded=r["phase_succeeded"],
            phase_failed=r["phase_failed"],
            reason=r["reason"],
            create_time=r["create_time"],
            update_time=r["update_time"],
        )

    @staticmethod
    def _rd(r: asyncpg.Record) -> RolloutDevice:
        return RolloutDevice(
            rollout_id=r["rollout_id"],
            device_id=r["device_id"],
            group_key=r["group_key"],
            bucket=r["bucket"],
            state=DeviceRolloutState(r["state"]),
            attempts=r["attempts"],
            step=_step(r["step"]),
            step_time=r["step_time"],
            last_error=r["last_error"],
            update_time=r["update_time"],
        )

    async def add(self, r: Rollout, devices: Sequence[RolloutDevice]) -> None:
        await self._conn.execute(
            "INSERT INTO rollouts (id, client_id, device_type_id, name, target, policy, state,"
            " phase,"
            " phase_succeeded, phase_failed, reason, create_time, update_time)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            r.id,
            r.client_id,
            r.device_type_id,
            r.name,
            _combo_json(r.target),
            _policy_json(r.policy),
            r.state.value,
            r.phase,
            r.phase_succeeded,
            r.phase_failed,
            r.reason,
            r.create_time,
            r.update_time,
        )
        await self._conn.copy_records_to_table(
            "rollout_devices",
            records=[
                (d.rollout_id, d.device_id, d.group_key, d.bucket, d.state.value, d.update_time)
                for d in devices
            ],
            columns=["rollout_id", "device_id", "group_key", "bucket", "state", "update_time"],
        )

    async def get(self, rollout_id: uuid.UUID, *, for_update: bool = False) -> Rollout:
        r = await self._conn.fetchrow(
            f"SELECT {self._COLS} FROM rollouts WHERE id = $1"
            + (" FOR UPDATE" if for_update else ""),
            rollout_id,
        )
        if r is None:
            raise NotFound(Rollout.KIND, str(rollout_id))
        return self._from(r)

    async def update(self, r: Rollout) -> None:
        await self._conn.execute(
            "UPDATE rollouts SET state = $2, phase = $3, phase_succeeded = $4, phase_failed = $5,"
            " reason = $6, update_time = $7 WHERE id = $1",
            r.id,
            r.state.value,
            r.phase,
            r.phase_succeeded,
            r.phase_failed,
            r.reason,
            r.update_time,
        )
        if r.state.value not in _ACTIVE:
            # Its devices are free for another rollout.
            await self._conn.execute(
                "UPDATE rollout_devices SET active = false WHERE rollout_id = $1 AND active", r.id
            )

    async def list(self, f: RolloutFilter, page: PageRequest) -> Page[Rollout]:
        args: list[Any] = []
        where = _visible_sql(f.visible, args)
        if f.state is not None:
            args.append(f.state.value)
            where.append(f"state = ${len(args)}")
        rows, nxt = await _page(self._conn, f"SELECT {self._COLS} FROM rollouts", where, args, page)
        return Page([self._from(r) for r in rows], nxt)

    async def active_devices(self, device_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = await self._conn.fetch(
            "SELECT device_id FROM rollout_devices WHERE active AND device_id = ANY($1::uuid[])",
            list(device_ids),
        )
        return {r["device_id"] for r in rows}

    async def of_device(self, device_id: uuid.UUID) -> RolloutDevice | None:
        r = await self._conn.fetchrow(
            f"SELECT {self._RD} FROM rollout_devices WHERE device_id = $1 AND active", device_id
        )
        return self._rd(r) if r else None

    async def save_device(self, rd: RolloutDevice) -> None:
        await self._conn.execute(
            "UPDATE rollout_devices SET state = $3, attempts = $4, step = $5, step_time = $6,"
            " last_error = $7, update_time = $8 WHERE rollout_id = $1 AND device_id = $2",
            rd.rollout_id,
            rd.device_id,
            rd.state.value,
            rd.attempts,
            _step_json(rd.step),
            rd.step_time,
            rd.last_error,
            rd.update_time,
        )

    async def phase_counts(self, rollout_id: uuid.UUID, percent: float) -> PhaseCounts:
        r = await self._conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'DONE') AS done,"
            " count(*) FILTER (WHERE state = 'FAILED') AS failed"
            " FROM rollout_devices WHERE rollout_id = $1 AND bucket < $2",
            rollout_id,
            percent,
        )
        return PhaseCounts(r["n"], r["done"], r["failed"])

    async def acquire_slot(self, rollout_id: uuid.UUID, group_key: str, limit: int) -> bool:
        await self._conn.execute(
            "INSERT INTO rollout_groups (rollout_id, group_key) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING",
            rollout_id,
            group_key,
        )
        got = await self._conn.fetchval(
            "UPDATE rollout_groups SET in_flight = in_flight + 1 WHERE rollout_id = $1"
            " AND group_key = $2 AND ($3 = 0 OR in_flight < $3) RETURNING in_flight",
            rollout_id,
            group_key,
            limit,
        )
        return got is not None

    async def release_slot(self, rollout_id: uuid.UUID, group_key: str) -> None:
        await self._conn.execute(
            "UPDATE rollout_groups SET in_flight = greatest(in_flight - 1, 0)"
            " WHERE rollout_id = $1 AND group_key = $2",
            rollout_id,
            group_key,
        )

    async def expired(
        self, rollout_id: uuid.UUID, before: datetime
    ) -> builtins.list[RolloutDevice]:
        rows = await self._conn.fetch(
            f"SELECT {self._RD} FROM rollout_devices WHERE rollout_id = $1"
            " AND state = 'IN_PROGRESS' AND step_time < $2 ORDER BY device_id FOR UPDATE",
            rollout_id,
            before,
        )
        return [self._rd(r) for r in rows]

    async def device_counts(self, rollout_id: uuid.UUID) -> dict[DeviceRolloutState, int]:
        rows = await self._conn.fetch(
            "SELECT state, count(*) AS n FROM rollout_devices WHERE rollout_id = $1 GROUP BY state",
            rollout_id,
        )
        return {DeviceRolloutState(r["state"]): r["n"] for r in rows}

    async def devices(
        self,
        rollout_id: uuid.UUID | None,
        visible: Visible,
        state: DeviceRolloutState | None,
        page: PageRequest,
    ) -> Page[RolloutDevice]:
        args: list[Any] = []
        where = _visible_sql(visible, args, "r.client_id")
        if rollout_id is not None:
            args.append(rollout_id)
            where.append(f"d.rollout_id = ${len(args)}")
        if state is not None:
            args.append(state.value)
            where.append(f"d.state = ${len(args)}")
        if page.after is not None:
            rid, did = cursor_parts(page.after, 2)
            args += [cursor_id(rid), cursor_id(did)]
            where.append(f"(d.rollout_id, d.device_id) > (${len(args) - 1}, ${len(args)})")
        args.append(page.size + 1)
        rows = await self._conn.fetch(
            "SELECT d.rollout_id, d.device_id, d.group_key, d.bucket, d.state, d.attempts,"
            " d.step::text AS step, d.step_time, d.last_error, d.update_time"
            " FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY d.rollout_id, d.device_id LIMIT ${len(args)}",
            *args,
        )
        items = [self._rd(r) for r in rows[: page.size]]
        nxt = f"{items[-1].rollout_id}|{items[-1].device_id}" if len(rows) > page.size else None
        return Page(items, nxt)
