"""Benchmark of the processing queue's work around the status step (issue 12, speed): the
worker's ``claim`` (with its fold of the inbox) and ``complete`` per batch, the code of the
adapter against the code before it (kept here, verbatim) in the same run, alternating, on one
database of ``--trackers`` queued trackers (1 hour bucket each), at each ``--batches`` size.
Every batch is claimed, then completed as done in its own transaction (the everyday case:
the row leaves the queue). Also: the fold when the inbox is empty (every claim does one).

    .venv/bin/python -m bench.processing_queue --trackers 250000 --batches 25000,2000

Prints seconds per batch (median over the batches of a drain, then the median over the
rounds), wall clock and this process's CPU (decoding and building the claims), and the
before/after ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

from adapters.postgres.pool import open_pool
from adapters.postgres.processing import (
    _FOLD_SQL,
    FOLD_LIMIT,
    PostgresProcessingQueue,
    PostgresProcessingUnitOfWork,
)
from adapters.tracing import link_queued
from bench.processing import make_world
from bench.throwaway import throwaway_database
from domain.ports.processing import Claim

# --- the code before (src/adapters/postgres/processing.py at 10f1c38) ---------------------

_BEFORE_CLAIM_SQL = """
UPDATE processing_queue q
SET claim_token = $1, claimed_until = clock_timestamp() + make_interval(secs => $3),
    newer_time = NULL
FROM (SELECT tracker_id FROM processing_queue
      WHERE (claimed_until IS NULL OR claimed_until < clock_timestamp())
        AND (retry_time IS NULL OR retry_time <= clock_timestamp())
      ORDER BY enqueue_time LIMIT $2
      FOR UPDATE SKIP LOCKED) c
WHERE q.tracker_id = c.tracker_id
RETURNING q.tracker_id, greatest(q.since, '0001-01-01T00:00:00Z') AS since,
          ARRAY(SELECT h FROM unnest(q.hours) AS h WHERE isfinite(h)) AS hours,
          q.version, q.enqueue_time, q.attempts, q.traceparents
"""


async def before_claim(
    pool: asyncpg.Pool, token: uuid.UUID, limit: int, lease_s: float
) -> list[Claim]:
    async with pool.acquire() as conn:
        await conn.execute(_FOLD_SQL, FOLD_LIMIT)
    async with pool.acquire() as conn:
        rows = await conn.fetch(_BEFORE_CLAIM_SQL, token, limit, lease_s)
    link_queued(tp for r in rows for tp in r["traceparents"])
    return [
        Claim(
            r["tracker_id"],
            r["since"],
            tuple(r["hours"]),
            r["version"],
            r["enqueue_time"],
            r["attempts"],
        )
        for r in rows
    ]


async def before_complete(
    conn: asyncpg.Connection, token: uuid.UUID, done: Sequence[Claim], claimed: Sequence[Claim]
) -> None:
    rows = await conn.fetch(
        """SELECT q.tracker_id, q.version,
                  EXISTS (SELECT 1 FROM trackers t WHERE t.id = q.tracker_id) AS tracked
           FROM unnest($1::uuid[]) AS c(id)
           JOIN processing_queue q ON q.tracker_id = c.id AND q.claim_token = $2
           ORDER BY q.tracker_id FOR UPDATE OF q""",
        [c.tracker_id for c in claimed],
        token,
    )
    version = {c.tracker_id: c.version for c in done}
    gone = [
        r["tracker_id"]
        for r in rows
        if not r["tracked"] or version.get(r["tracker_id"]) == r["version"]
    ]
    if gone:
        await conn.execute(
            """DELETE FROM processing_queue q USING unnest($1::uuid[]) AS g(id)
               WHERE q.tracker_id = g.id""",
            gone,
        )
    dropped = set(gone)
    kept = [r["tracker_id"] for r in rows if r["tracker_id"] not in dropped]
    healed = {c.tracker_id for c in done if c.attempts} & set(kept)
    if healed:
        await conn.execute(
            """UPDATE processing_queue q SET attempts = 0, last_error = NULL,
                   first_failure_time = NULL, last_failure_time = NULL, retry_time = NULL
               FROM unnest($1::uuid[]) AS h(id) WHERE q.tracker_id = h.id""",
            list(healed),
        )
    if kept:
        await conn.execute(
            """UPDATE processing_queue q
               SET claim_token = NULL, claimed_until = NULL, newer_time = NULL,
                   enqueue_time = CASE WHEN k.done THEN coalesce(q.newer_time, q.enqueue_time)
                                       ELSE q.enqueue_time END
               FROM unnest($1::uuid[], $2::bool[]) AS k(id, done)
               WHERE q.tracker_id = k.id""",
            kept,
            [t in version for t in kept],
        )


# --- the runs -------------------------------------------------------------------------------

Claimer = Callable[[asyncpg.Pool, uuid.UUID, int, float], Awaitable[list[Claim]]]
Completer = Callable[
    [PostgresProcessingUnitOfWork, uuid.UUID, Sequence[Claim], Sequence[Claim]], Awaitable[None]
]


async def _after_claim(
    pool: asyncpg.Pool, token: uuid.UUID, limit: int, lease_s: float
) -> list[Claim]:
    return await PostgresProcessingQueue(pool).claim(token, limit, lease_s)


async def _after_complete(
    uow: PostgresProcessingUnitOfWork,
    token: uuid.UUID,
    done: Sequence[Claim],
    claimed: Sequence[Claim],
) -> None:
    await uow.complete(token, done, claimed)


async def _before_complete(
    uow: PostgresProcessingUnitOfWork,
    token: uuid.UUID,
    done: Sequence[Claim],
    claimed: Sequence[Claim],
) -> None:
    await before_complete(uow._c, token, done, claimed)


IMPLS: dict[str, tuple[Claimer, Completer]] = {
    "before": (before_claim, _before_complete),
    "after": (_after_claim, _after_complete),
}


async def refill(pool: asyncpg.Pool) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    async with pool.acquire() as c:
        await c.execute("DELETE FROM processing_queue")
        await c.execute(
            """INSERT INTO processing_queue (tracker_id, since, hours, enqueue_time)
               SELECT id, $1::timestamptz, ARRAY[$1::timestamptz], clock_timestamp()
               FROM trackers""",
            hour,
        )
        await c.execute("VACUUM ANALYZE processing_queue")


async def drain(pool: asyncpg.Pool, name: str, batch: int) -> dict[str, list[float]]:
    """Claim and complete everything; per batch, seconds of claim and of complete (wall
    clock) and of this process's CPU in each (decoding and building, in Python)."""
    claim, complete = IMPLS[name]
    got: dict[str, list[float]] = {
        k: [] for k in ("claim", "complete", "claim cpu", "complete cpu")
    }
    while True:
        token = uuid.uuid4()
        t0, c0 = time.perf_counter(), time.process_time()
        claims = await claim(pool, token, batch, 600)
        t1, c1 = time.perf_counter(), time.process_time()
        if not claims:
            return got
        async with PostgresProcessingUnitOfWork(pool) as uow:
            t2, c2 = time.perf_counter(), time.process_time()
            await complete(uow, token, claims, claims)
            await uow.commit()
        t3, c3 = time.perf_counter(), time.process_time()
        if len(claims) == batch:  # (the last, partial batch is not counted)
            for k, v in zip(got, (t1 - t0, t3 - t2, c1 - c0, c3 - c2), strict=True):
                got[k].append(v)


async def empty_fold(pool: asyncpg.Pool, times: int) -> float:
    queue = PostgresProcessingQueue(pool)
    t = time.perf_counter()
    for _ in range(times):
        await queue.fold()
    return (time.perf_counter() - t) / times


async def main_async(trackers: int, batches: list[int], rounds: int) -> None:
    async with throwaway_database(prefix="tracker_queue") as url:
        conn = await asyncpg.connect(url)
        await make_world(conn, trackers)
        await conn.close()
        pool = await open_pool(url, max_size=2)
        print(f"{trackers} trackers queued; claim (with its fold) and complete per batch, s")
        for batch in batches:
            got: dict[str, dict[str, list[float]]] = {n: {} for n in IMPLS}
            for r in range(rounds):
                order = list(IMPLS) if r % 2 == 0 else list(reversed(IMPLS))
                for name in order:
                    await refill(pool)
                    per = {
                        k: statistics.median(v) for k, v in (await drain(pool, name, batch)).items()
                    }
                    for k, v in per.items():
                        got[name].setdefault(k, []).append(v)
                    print(
                        f"  batch {batch:6d} round {r} {name:6}: "
                        + ", ".join(f"{k} {v:.4f}" for k, v in per.items())
                    )
            med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in got.items()}
            for phase in med["before"]:
                b, a = med["before"][phase], med["after"][phase]
                print(
                    f"batch {batch}: {phase:8} before {b:.4f} s, after {a:.4f} s "
                    f"({1e6 * b / batch:.1f} -> {1e6 * a / batch:.1f} us/tracker), "
                    f"before/after {b / a:.2f}x"
                )
        print(f"fold of an empty inbox: {1e3 * await empty_fold(pool, 200):.3f} ms")
        await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=250_000)
    ap.add_argument("--batches", default="25000,2000", help="comma-separated batch sizes")
    ap.add_argument("--rounds", type=int, default=2, help="drains per implementation and size")
    a = ap.parse_args()
    asyncio.run(main_async(a.trackers, [int(x) for x in a.batches.split(",")], a.rounds))


if __name__ == "__main__":
    main()
