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
from adapters.findmy.keypairs import KeyPairCache
from domain.scheduling import AccountPolicy, FetchPolicy
from servers import endpoints
from servers.config import ConfigError, Settings
from servers.container import FetcherContainer
from servers.fetcher_runtime import FetcherRuntime
from servers.runtime import Background, main_for
from servers.services import POSTGRES, REDIS
from usecases.fetching import Account, FetcherConfig

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
    f = s.fetcher
    return FetcherConfig(
        worker_id=name or worker_id(),
        policy=FetchPolicy(
            interval=interval or f.request_interval,
            max_factor=f.max_backoff_factor,
            max_report_age=f.max_report_age,
            overlap=f.overlap,
            end_grace=f.end_grace,
            fill_horizon=f.fill_horizon,
        ),
        account_policy=AccountPolicy(
            min_interval=f.account_interval,
            max_cooldown=f.account_cooldown_max,
            budget_per_hour=(
                f.account_budget_per_hour if budget_per_hour is None else budget_per_hour
            ),
            probe_max=f.probe_max,
        ),
        source_busy=f.source_busy,
        keys_per_request=f.keys_per_request,
        lease=f.lease,
        heartbeat=f.heartbeat,
        worker_ttl=s.fetch_queue.worker_ttl,
        queue_check=f.queue_check,
        request_timeout=s.findmy.timeout,
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
        self.runtime: FetcherRuntime | None = None
        self._task: asyncio.Task[None] | None = None
        self._owned: list[Account] = []

    async def start(self, container: FetcherContainer) -> None:
        s = self._settings
        accounts = self._accounts
        if accounts is None:
            try:
                accounts = self._owned = load_accounts(
                    s.findmy.account_file,
                    container.sealer(),
                    fetch_url=s.findmy.fetch_url,
                    timeout_s=s.findmy.timeout.total_seconds(),
                    anisette_url=s.findmy.anisette_server,
                    clock=container.clock(),
                    key_pairs=KeyPairCache(s.fetcher.key_cache),
                )
            except AccountFileError as exc:
                raise ConfigError(str(exc)) from None
        config = fetcher_config(s, self._interval, self._budget)
        worker = await container.fetch_worker.async_(accounts=accounts, config=config)
        self.runtime = await container.fetcher_runtime.async_(worker=worker)
        self._task = asyncio.create_task(self.runtime.run(), name="fetcher")
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
        if self.runtime is not None:
            self.runtime.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    self._task, timeout=self._settings.server.shutdown_grace.total_seconds()
                )
            except TimeoutError:
                log.warning("fetcher did not stop within the grace period")
        await close_accounts(self._owned)


def background(settings: Settings) -> list[Background]:
    if not settings.findmy.account_file:
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
        process="fetcher",
        container=FetcherContainer,
    )


if __name__ == "__main__":
    raise SystemExit(main())
