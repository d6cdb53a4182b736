"""Composition root of the fetcher process (``tracker-fetcher``): claims due trackers from the
Redis queue, fetches them from Find My with a pool of accounts, stores the reports. Any number
of replicas share the queue. It serves only health checks (port 5000) and metrics (9464)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import timedelta

from adapters.findmy.accounts import AccountFileError, close_accounts, load_accounts
from domain.scheduling import AccountPolicy, FetchPolicy
from servers import endpoints
from servers.config import ConfigError, Settings
from servers.container import Container
from servers.runtime import Background, main_for
from servers.services import POSTGRES, REDIS
from usecases.fetching import Account, FetcherConfig, FetchWorker

log = logging.getLogger("tracker.fetcher")


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def fetcher_config(
    s: Settings,
    interval: timedelta | None = None,
    budget_per_hour: float | None = None,
    name: str | None = None,
) -> FetcherConfig:
    """The fetcher's rules from the settings (``trackerctl findmy fetch`` uses the same).
    ``budget_per_hour``: overrides the accounts' budget (the demo's simulator has none)."""
    return FetcherConfig(
        worker_id=name or worker_id(),
        policy=FetchPolicy(
            interval=interval or timedelta(hours=s.request_interval_hours),
            max_factor=s.max_backoff_factor,
            max_report_age=timedelta(days=s.max_report_age_days),
            overlap=timedelta(hours=s.fetch_overlap_h),
            end_grace=timedelta(hours=s.fetch_end_grace_h),
            fill_horizon=s.fetch_fill_horizon,
        ),
        account_policy=AccountPolicy(
            min_interval=timedelta(seconds=s.fetch_interval_s),
            max_cooldown=timedelta(seconds=s.fetch_account_cooldown_max_s),
            budget_per_hour=(
                s.fetch_account_budget_per_hour if budget_per_hour is None else budget_per_hour
            ),
            probe_max=timedelta(seconds=s.fetch_probe_max_s),
        ),
        source_busy=timedelta(seconds=s.findmy_busy_s),
        keys_per_request=s.max_keys_per_batch,
        lease=timedelta(seconds=s.fetch_lease_s),
        heartbeat=timedelta(seconds=s.fetch_heartbeat_s),
        worker_ttl=timedelta(seconds=s.fetch_worker_ttl_s),
        queue_check=timedelta(seconds=s.fetch_queue_check_s),
        request_timeout=timedelta(seconds=s.findmy_timeout_s),
    )


class Fetcher:
    """The fetch loop as a ``Background`` of a process. ``accounts`` default to the session
    files of the settings (the demo passes its simulator's account instead)."""

    needs = (POSTGRES, REDIS)

    def __init__(
        self,
        settings: Settings,
        accounts: Sequence[Account] | None = None,
        interval: timedelta | None = None,
        budget_per_hour: float | None = None,
    ) -> None:
        self._settings = settings
        self._accounts = list(accounts) if accounts is not None else None
        self._interval = interval
        self._budget = budget_per_hour
        self.worker: FetchWorker | None = None
        self._task: asyncio.Task[None] | None = None
        self._owned: list[Account] = []

    async def start(self, container: Container) -> None:
        s = self._settings
        accounts = self._accounts
        if accounts is None:
            try:
                accounts = self._owned = load_accounts(
                    s.findmy_account_file,
                    container.sealer(),
                    fetch_url=s.findmy_fetch_url,
                    timeout_s=s.findmy_timeout_s,
                    anisette_url=s.anisette_server,
                    clock=container.clock(),
                )
            except AccountFileError as exc:
                raise ConfigError(str(exc)) from None
        config = fetcher_config(s, self._interval, self._budget)
        self.worker = await container.fetch_worker.async_(accounts=accounts, config=config)
        self._task = asyncio.create_task(self.worker.run(), name="fetcher")
        log.info(
            "fetcher running",
            extra={
                "worker": config.worker_id,
                "accounts": [a.name for a in accounts],
                "interval_s": config.policy.interval.total_seconds(),
                "keys_per_request": config.keys_per_request,
                "account_requests_per_hour": config.account_policy.requests_per_hour(),
            },
        )

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=self._settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("fetcher did not stop within the grace period")
        await close_accounts(self._owned)


def background(settings: Settings) -> list[Background]:
    if not settings.findmy_account_file:
        raise ConfigError(
            "the fetcher needs Find My accounts: set TRACKER_FINDMY_ACCOUNT_FILE "
            "(session files from 'trackerctl findmy login', comma-separated, or a directory)"
        )
    return [Fetcher(settings)]


def main(argv: Sequence[str] | None = None) -> int:
    return main_for(
        "tracker-fetcher: fetches due trackers' reports from Find My into PostgreSQL",
        endpoints.health,
        argv,
        background,
    )


if __name__ == "__main__":
    raise SystemExit(main())
