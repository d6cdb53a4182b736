"""Benchmark of the worker's status step (issue 12, speed): the plain and the evidence rule
side by side in one run, at several fleet sizes, for trackers with 2 new reports each.

The status step is what ``ProcessNewReports`` does for a batch once its claims are locked
(``usecases.processing.evaluate_statuses``), column-wise: ``inputs`` (``status_state``: rule
and checkpoint of every tracker by one binary COPY; late ones through ``status_inputs``),
``readings`` (one binary COPY of the batch's reports, fence classification in numpy),
``replay`` (``replay_columns``, bit for bit ``domain.status.replay``) and ``save``
(``save_results``: binary COPYs into temporary tables, one statement per table). Two cases:

- **steady**: every tracker already has a checkpoint (its earlier reports were processed) and
  2 new reports arrive: the worker's everyday case;
- **first**: the same trackers evaluated from nothing (their first 2 reports).

Per size and rule it prints the seconds of processing of the status step (the sum of its
phases over the batches, one batch at a time; with ``--concurrency`` > 1 batches at once,
whose phases overlap, the wall clock), trackers/s, the phases and the queue's claim, lock
and complete, the wall clock with them, how many trackers the bulk replay took, and the
evidence/plain ratio. Baselines in the same run (unless ``--no-baseline``): the whole step
done the object way, as the worker did it before (``status_inputs``, ``readings``,
``replay_batch``, ``save_statuses``: objects per tracker in and out), on the same batch in a
savepoint that is rolled back; and the replay alone, one pure ``replay`` per tracker over
``Reading`` objects against ``replay_columns``. Target (printed, not asserted): 250,000
trackers in <= 5 s.

    .venv/bin/python -m bench.status_step --sizes 10000,50000,250000

The database server is the one ``TRACKER_BENCH_ADMIN_URL`` names (default
``postgresql://postgres@127.0.0.1:5432/postgres``; see ``bench/throwaway.py``): point it at
another cluster, e.g. one sized for the data, to compare servers side by side, e.g.
``TRACKER_BENCH_ADMIN_URL=postgresql://postgres@127.0.0.1:5433/postgres``. The run prints the
server's port and the settings that matter for it (``SERVER_SETTINGS``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.postgres.pool import open_pool
from adapters.postgres.processing import PostgresProcessingQueue, PostgresProcessingUnitOfWork
from adapters.postgres.reports import PostgresReportRepository
from bench.processing import BERLIN, HAMBURG, ROAD, RUNS, make_world
from bench.throwaway import throwaway_database
from domain.model import GeoPoint
from domain.ports.processing import Claim, Evaluation
from domain.reports import Report
from domain.status import RuleKind, replay, resume_point
from domain.status_batch import replay_batch, replay_columns
from usecases.processing import evaluate_statuses

PHASES = ("inputs", "readings", "replay", "save")
KINDS = (("plain", RuleKind.CONSECUTIVE), ("evidence", RuleKind.EVIDENCE))
TARGET_TRACKERS, TARGET_S = 250_000, 5.0
SERVER_SETTINGS = (
    "port",
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "wal_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "random_page_cost",
    "fsync",
    "synchronous_commit",
)


async def server_settings(conn: asyncpg.Connection) -> str:
    """The server's settings that matter for the status step, as one printable line."""
    rows = await conn.fetch(
        "SELECT name, current_setting(name) AS value FROM unnest($1::text[]) AS name",
        list(SERVER_SETTINGS),
    )
    return ", ".join(f"{r['name']}={r['value']}" for r in rows)


def reports_at(trackers: list[uuid.UUID], t0: datetime, rng: random.Random) -> list[Report]:
    """Two reports per tracker, 10 minutes apart from ``t0``: in storage, on the road or
    delivered (each tracker keeps its place, as goods mostly do between two reports)."""
    out = []
    for n, t in enumerate(trackers):
        lat, lon = [BERLIN, HAMBURG, ROAD][n * 7 % 3] if rng.random() < 0.9 else ROAD
        lon += (n % RUNS) * 1e-3
        for k in range(2):
            out.append(
                Report(
                    tracker_id=t,
                    report_time=t0 + timedelta(minutes=10 * k),
                    position=GeoPoint(lat + rng.uniform(-1e-3, 1e-3), lon),
                    confidence=rng.choice([2, 3]),
                    horizontal_accuracy_m=rng.randrange(5, 100),
                )
            )
    return out


class Tally:
    def __init__(self) -> None:
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.pure_replay = 0.0
        self.bulk_again = 0.0
        self.object_step = 0.0
        self.queue = dict.fromkeys(("claim", "lock", "complete"), 0.0)
        self.stats: dict[str, int] = {}
        self.changes = 0
        self.trackers = 0
        self.spans: list[tuple[float, float]] = []  # each batch's status step (start, end)

    def step_wall(self) -> float:
        """Seconds during which at least one batch was in its status step (batches at once
        overlap: their union)."""
        total, end = 0.0, float("-inf")
        for a, b in sorted(self.spans):
            if b > end:
                total += b - max(a, end)
                end = b
        return total


class _Undo(Exception):
    pass


async def object_step(uow: PostgresProcessingUnitOfWork, claims: list[Claim]) -> None:
    since = {c.tracker_id: c.since for c in claims}
    inputs = await uow.status_inputs(claims)
    resumes = {
        i.tracker_id: resume_point(since[i.tracker_id], i.checkpoint, i.last_change_before_since)
        for i in inputs
    }
    columns = await uow.readings({t: r.after for t, r in resumes.items()})
    rules = {i.tracker_id: i.rule for i in inputs}
    outcomes = replay_batch([(resumes[t].state, rules[t]) for t in columns.trackers], columns)
    await uow.save_statuses(
        [
            Evaluation(t, resumes[t], state, ch, last)
            for t, (state, ch, last) in zip(columns.trackers, outcomes, strict=True)
        ]
    )


async def evaluate(
    uow: PostgresProcessingUnitOfWork, claims: list[Claim], tally: Tally, baseline: bool
) -> None:
    """The status step of ProcessNewReports for a batch of claims, timed by phase."""
    if baseline:
        # The step the object way, as the worker did it before (a StatusInput, RuleState,
        # Evaluation per tracker in and out, the save by arrays of values), on the same
        # batch in a savepoint that is rolled back.
        t = time.perf_counter()
        try:
            async with uow._c.transaction():
                await object_step(uow, claims)
                raise _Undo
        except _Undo:
            pass
        tally.object_step += time.perf_counter() - t
    marks = [time.perf_counter()]
    names: list[str] = []

    def mark(name: str) -> None:
        marks.append(time.perf_counter())
        names.append(name)

    changes = await evaluate_statuses(uow, claims, mark, tally.stats)
    tally.spans.append((marks[0], marks[-1]))
    tally.changes += changes  # (not += await: batches at once would lose counts)
    for name, a, b in zip(names, marks[:-1], marks[1:], strict=True):
        tally.phases[name] += b - a
    tally.trackers += len(claims)
    if baseline:
        # The replay phase as it was (objects in and out: one pure replay per tracker over
        # Reading objects) against the columnar replay, back to back on the same batch.
        state = await uow.status_state(claims)
        columns = await uow.readings_after(state)
        if state.unresolved():
            return  # (only checkpoints and fresh trackers here)
        t = time.perf_counter()
        replay_columns(state, columns)
        t5 = time.perf_counter()
        starts = [(state.states.get(i, state.ids), state.rule(i)) for i in range(len(state))]
        t6 = time.perf_counter()
        for i, (start, rule) in enumerate(starts):
            replay(start, columns.readings(i), rule)
        tally.bulk_again += t5 - t
        tally.pure_replay += time.perf_counter() - t6


async def status_step(
    pool: asyncpg.Pool, since: datetime, batch: int, concurrency: int, baseline: bool
) -> tuple[float, Tally]:
    """Queue every tracker (new reports from ``since``), then run the status step over all
    of them in batches; returns the wall-clock seconds and the tally."""
    async with pool.acquire() as c:
        await c.execute("DELETE FROM processing_queue")
        await c.execute(
            """INSERT INTO processing_queue (tracker_id, since, hours)
               SELECT id, $1, '{}' FROM trackers""",
            since,
        )
        await c.execute("VACUUM ANALYZE processing_queue")
        # (not tracker_status: statistics of the truncated, empty table made the planner
        # take a plan that ran for minutes once the first batch had filled it)
    queue = PostgresProcessingQueue(pool)
    tally = Tally()

    async def drain() -> None:
        q = tally.queue
        while True:
            token = uuid.uuid4()
            t0 = time.perf_counter()
            claims = await queue.claim(token, batch, 600)
            q["claim"] += time.perf_counter() - t0
            if not claims:
                return
            async with PostgresProcessingUnitOfWork(pool) as uow:
                t1 = time.perf_counter()
                mine = await uow.lock(token, claims)
                q["lock"] += time.perf_counter() - t1
                await evaluate(uow, mine, tally, baseline)
                t2 = time.perf_counter()
                await uow.complete(token, mine, claims)
                await uow.commit()
                q["complete"] += time.perf_counter() - t2

    t = time.perf_counter()
    await asyncio.gather(*(drain() for _ in range(concurrency)))
    # (the baseline runs inside the batches: take it out of the wall clock)
    return (
        time.perf_counter() - t - tally.pure_replay - tally.bulk_again - tally.object_step,
        tally,
    )


def line(case: str, name: str, n: int, wall: float, tally: Tally) -> str:
    step = sum(tally.phases.values())
    phases = ", ".join(f"{k} {v:.2f}" for k, v in (tally.phases | tally.queue).items())
    bulk = tally.stats.get("bulk", 0)
    base = (
        f"; replay back to back: one by one (before) {tally.pure_replay:.2f} s, in bulk "
        f"{tally.bulk_again:.2f} s, {tally.pure_replay / max(tally.bulk_again, 1e-9):.1f}x"
        if tally.pure_replay
        else ""
    )
    if tally.object_step:
        base += (
            f"; the step the object way (before) {tally.object_step:.2f} s, "
            f"{tally.object_step / step:.2f}x this"
        )
    if len(tally.spans) > 1 and tally.step_wall() < step * 0.999:
        phases += f"; batches overlapping: step wall clock {tally.step_wall():.2f} s"
    return (
        f"  {case:6} {name:8} step {step:7.2f} s  {n / step:7.0f} trackers/s  "
        f"{1e6 * step / n:6.1f} us/tracker  (phases s: {phases}; with claim/lock/complete "
        f"{wall:.2f} s; {tally.changes} changes, {bulk}/{n} in bulk{base})"
    )


def _figure(wall: float, tally: Tally, concurrency: int) -> float:
    """The status step's processing time: the sum of its phases, one batch at a time; with
    batches at once (their phases overlap) the time during which any batch was in its
    step (the union of their steps' spans; the queue's work of the other batch runs beside
    it on the same cores)."""
    return sum(tally.phases.values()) if concurrency == 1 else tally.step_wall()


async def one_size(n: int, batch: int, concurrency: int, baseline: bool) -> dict[str, float]:
    rng = random.Random(n)
    print(f"\n{n} trackers x 2 new reports, batches of {batch}, {concurrency} at a time")
    took: dict[str, float] = {}
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        print(f"  server: {await server_settings(conn)}")
        trackers = await make_world(conn, n)
        now = datetime.now(UTC).replace(microsecond=0)
        first_at, steady_at = now - timedelta(hours=2), now - timedelta(minutes=30)
        repo = PostgresReportRepository(conn)

        async def store(reports: list[Report]) -> None:
            for i in range(0, len(reports), 50_000):
                async with conn.transaction():
                    await repo.add_many(reports[i : i + 50_000])
            await conn.execute("DELETE FROM processing_inbox")
            await conn.execute("ANALYZE")

        await store(reports_at(trackers, first_at, rng))
        pool = await open_pool(url, max_size=concurrency + 1)
        for name, kind in KINDS:  # first evaluation; each rule's outcome kept for "steady"
            await conn.execute("TRUNCATE tracker_status, status_history")
            await conn.execute(
                """INSERT INTO status_rules (production_run_id, kind)
                   SELECT id, $1 FROM production_runs
                   ON CONFLICT (production_run_id) DO UPDATE SET kind = excluded.kind""",
                kind.value,
            )
            wall, tally = await status_step(
                pool, datetime(1, 1, 1, tzinfo=UTC), batch, concurrency, baseline
            )
            print(line("first", name, n, wall, tally))
            took[f"first {name}"] = _figure(wall, tally, concurrency)
            await conn.execute(f"CREATE TABLE ts_{name} AS SELECT * FROM tracker_status")
            await conn.execute(f"CREATE TABLE sh_{name} AS SELECT * FROM status_history")
        await store(reports_at(trackers, steady_at, rng))
        for name, kind in KINDS:
            await conn.execute("TRUNCATE tracker_status, status_history")
            await conn.execute(f"INSERT INTO tracker_status SELECT * FROM ts_{name}")
            await conn.execute(f"INSERT INTO status_history SELECT * FROM sh_{name}")
            await conn.execute("ANALYZE tracker_status")
            await conn.execute("ANALYZE status_history")
            await conn.execute("UPDATE status_rules SET kind = $1", kind.value)
            wall, tally = await status_step(pool, steady_at, batch, concurrency, baseline)
            print(line("steady", name, n, wall, tally))
            took[f"steady {name}"] = _figure(wall, tally, concurrency)
        await pool.close()
        await conn.close()
    for case in ("first", "steady"):
        p, e = took[f"{case} plain"], took[f"{case} evidence"]
        print(f"  {case}: evidence / plain = {e / p:.2f}x")
    return took


async def main_async(sizes: list[int], batch: int, concurrency: int, baseline: bool) -> None:
    results = {n: await one_size(n, batch, concurrency, baseline) for n in sizes}
    print("\nstatus step per tracker (us), by size:")
    for n, took in results.items():
        print(f"  {n:8d}: " + ", ".join(f"{k} {1e6 * v / n:6.1f}" for k, v in took.items()))
    n = max(results)
    took = results[n]
    scale = TARGET_TRACKERS / n
    for key in ("steady evidence", "steady plain", "first evidence"):
        s = took[key] * scale
        what = "measured" if n == TARGET_TRACKERS else f"extrapolated from {n}"
        print(
            f"{key} at {TARGET_TRACKERS} trackers: {s:.1f} s ({what}); target <= {TARGET_S:g} s: "
            f"{'MET' if s <= TARGET_S else 'MISSED'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,50000,250000", help="comma-separated")
    ap.add_argument("--batch", type=int, default=25_000, help="trackers per batch")
    ap.add_argument(
        "--concurrency", type=int, default=1, help="batches at once (>1: wall clock figures)"
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip the same-run baselines")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    asyncio.run(main_async(sizes, a.batch, a.concurrency, not a.no_baseline))


if __name__ == "__main__":
    main()
