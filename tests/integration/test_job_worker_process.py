"""A bulk job survives its worker process being killed (SIGKILL, twice, mid-job): once a
new worker takes over, the result is exactly that of the same job run without a kill: the
same trackers, the same failures on the same lines, no batch applied twice, none lost."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys
import uuid

import asyncpg
import pytest

from tests.conftest import process_env
from tests.integration.conftest import Stack
from tests.integration.fleet import BIN, wait_for
from tests.integration.test_jobs import (
    allocate,
    csv_of,
    get,
    job_stubs,
    macs_of_new_batch,
    trackers_of,
)
from tests.integration.test_keys import run_of_new_client
from tracker.v1 import job_query_service_pb2 as jq
from tracker.v1 import job_service_pb2 as js
from tracker.v1 import jobs_pb2 as pb

pytestmark = pytest.mark.integration

ROWS = 3000
LEASE_S = 2


class Worker:
    def __init__(self, database_url: str, logs: pathlib.Path) -> None:
        self.env = {
            **process_env(),
            "TRACKER_DATABASE_URL": database_url,
            "TRACKER_JOB_LEASE_S": str(LEASE_S),
            "TRACKER_JOB_IDLE_S": "0.05",
            "TRACKER_WORKER_IDLE_S": "5",
            "TRACKER_HEALTH_PORT": "0",
            "TRACKER_METRICS_PORT": "0",
            "TRACKER_LOG_LEVEL": "INFO",
            "TRACKER_SHUTDOWN_GRACE_S": "2",
        }
        self.logs = logs
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> asyncio.subprocess.Process:
        out = open(self.logs / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115, ASYNC230
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "tracker-worker"), env=self.env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        out.close()
        self.procs.append(proc)
        return proc

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


@pytest.fixture
async def workers(database_url: str, tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    w = Worker(database_url, tmp_path)
    yield w
    await w.stop()


async def a_job(stack: Stack, tag: str) -> tuple[str, str, list[str]]:
    """A run, and a job importing a 3,000-row file into it: 2,700 allocated tags, 290 tags
    not allocated (retryable failures), 5 rows that are no MAC and 5 repeats."""
    client, run = await run_of_new_client(stack, tag)
    macs = await macs_of_new_batch(stack, ROWS - 10)
    await allocate(stack, client.id, macs[:2700])
    rows = [*macs[:1000], *(f"bad-{i}" for i in range(5)), *macs[1000:], *macs[:5]]
    jobs, _ = job_stubs(stack)
    job = (
        await jobs.StartJob(
            js.StartJobRequest(
                kind=pb.JOB_KIND_IMPORT_TRACKERS,
                production_run_id=run.id,
                file=csv_of(rows),
                batch_size=100,
                items_per_second=3000,
            )
        )
    ).job
    return job.id, run.id, macs[:2700]


async def outcome(stack: Stack, database_url: str, job_id: str) -> dict[str, object]:
    """Everything a job left, with nothing that names its own run or tags."""
    _, query = job_stubs(stack)
    job = await get(stack, job_id)
    fails, token = [], ""
    while True:
        page = await query.ListJobFailures(
            jq.ListJobFailuresRequest(job_id=job_id, page_size=1000, page_token=token)
        )
        fails += [(f.line, f.reason, f.retryable, f.batch) for f in page.failures]
        token = page.next_page_token
        if not token:
            break
    conn = await asyncpg.connect(database_url)
    try:
        batches = await conn.fetch(
            "SELECT seq, status, items, succeeded, failed FROM job_batches WHERE job_id = $1"
            " ORDER BY seq",
            uuid.UUID(job_id),
        )
    finally:
        await conn.close()
    return {
        "status": job.status,
        "counts": (job.total_count, job.succeeded_count, job.failed_count, job.pending_count),
        "batches": [tuple(b) for b in batches],
        "failures": fails,
    }


async def test_a_job_killed_twice_mid_way_ends_exactly_like_an_uninterrupted_one(
    stack: Stack, database_url: str, workers: Worker
) -> None:
    killed_id, killed_run, killed_macs = await a_job(stack, "killed")
    worker = await workers.start()
    kills = []
    for threshold in (700, 1800):
        progressed = await wait_for(
            lambda t=threshold: _succeeded_at_least(stack, killed_id, t), timeout=60, every=0.02
        )
        assert progressed, (workers.logs / "worker-0.log").read_text()[-2000:]
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        mid = await get(stack, killed_id)
        kills.append((mid.succeeded_count, mid.running_batch_count))
        assert mid.status == pb.JOB_STATUS_RUNNING
        assert 0 < mid.succeeded_count < 2700
        worker = await workers.start()
    done = await wait_for(lambda: _finished(stack, killed_id), timeout=120, every=0.1)
    assert done, kills

    clean_id, clean_run, clean_macs = await a_job(stack, "clean")
    assert await wait_for(lambda: _finished(stack, clean_id), timeout=120, every=0.1)

    killed = await outcome(stack, database_url, killed_id)
    clean = await outcome(stack, database_url, clean_id)
    assert killed == clean, f"kills (succeeded, batches held by the dead worker): {kills}"
    assert killed["counts"] == (ROWS, 2700, 300, 0)
    assert await trackers_of(stack, killed_run) == sorted(killed_macs)
    assert await trackers_of(stack, clean_run) == sorted(clean_macs)


async def _succeeded_at_least(stack: Stack, job_id: str, n: int) -> bool:
    return (await get(stack, job_id)).succeeded_count >= n


async def _finished(stack: Stack, job_id: str) -> bool:
    return (await get(stack, job_id)).status == pb.JOB_STATUS_SUCCEEDED


async def trackerctl(database_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "trackerctl"),
        "job",
        *args,
        env={**process_env(), "TRACKER_DATABASE_URL": database_url, "TRACKER_JOB_LEASE_S": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_trackerctl_starts_a_job_interrupted_and_takes_it_up_again(
    stack: Stack, database_url: str, tmp_path: pathlib.Path
) -> None:
    client, run = await run_of_new_client(stack, "cli")
    macs = await macs_of_new_batch(stack, 400)
    await allocate(stack, client.id, macs[:390])
    path = tmp_path / "shipment.csv"
    path.write_bytes(csv_of(macs))
    # a slow job, left running by a trackerctl that goes away after starting it
    code, out, err = await trackerctl(
        database_url,
        "start",
        "--kind",
        "import",
        "--run",
        run.id,
        "--file",
        str(path),
        "--batch-size",
        "50",
        "--items-per-second",
        "50",  # 8 s for the job: the interruption below lands mid-way even on a loaded machine
        "--detach",
    )
    assert code == 0, err
    job_id = out.strip()
    assert uuid.UUID(job_id)
    assert (await get(stack, job_id)).succeeded_count == 0  # no worker here
    # trackerctl applies it itself with --work, drawing the bar as it goes; interrupted
    # (Ctrl-C) mid-way, a second one takes it up (a batch it held comes back after its lease)
    # Ctrl-C as from a terminal: SIGINT at its default disposition in the child, whatever
    # this process inherited (a background job of a non-interactive shell, such as a CI
    # runner's, ignores SIGINT, and so would the child: it then ran the job to the end)
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])",
        str(BIN / "trackerctl"),
        "job",
        "watch",
        job_id,
        "--work",
        env={**process_env(), "TRACKER_DATABASE_URL": database_url, "TRACKER_JOB_LEASE_S": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await wait_for(lambda: _succeeded_at_least(stack, job_id, 50), 60, every=0.05)
    first.send_signal(signal.SIGINT)
    await first.wait()
    mid = await get(stack, job_id)
    assert mid.status == pb.JOB_STATUS_RUNNING
    assert mid.pending_count > 0
    code, out, err = await trackerctl(database_url, "watch", job_id, "--work")
    assert code == 0, err
    assert "/400" in err
    assert "[########################################] 400/400" in err
    assert "SUCCEEDED/DONE succeeded=390 failed=10" in out
    code, out, _ = await trackerctl(database_url, "failures", job_id)
    assert len(out.splitlines()) == 10
    assert all(",retryable,no tag with this MAC" in line for line in out.splitlines())
    code, out, err = await trackerctl(database_url, "pause", job_id)
    assert code == 1
    assert "SUCCEEDED; pause needs RUNNING" in err
    assert len(await trackers_of(stack, run.id)) == 390
