"""One composition root per process: each process's container holds what the process serves
and nothing else, and wires it from the settings that process loads, no others."""

from __future__ import annotations

import inspect
import pathlib
from typing import Any

import pytest
from dependency_injector import providers
from redis.asyncio import Redis

from servers import all_in_one, collector, fetcher, health, query, worker
from servers.config import load
from servers.container import (
    CollectorContainer,
    Container,
    Core,
    FetcherContainer,
    HealthContainer,
    QueryContainer,
    WorkerContainer,
)
from servers.services import COLLECTOR, QUERY, SERVICES

ROOTS: dict[str, type[Core]] = {
    "collector": CollectorContainer,
    "query": QueryContainer,
    "health": HealthContainer,
    "fetcher": FetcherContainer,
    "worker": WorkerContainer,
    "all_in_one": Container,
}
SERVES = {"collector": COLLECTOR, "query": QUERY, "all_in_one": SERVICES}
# Factories the roots call with what only they know (accounts, the fetcher's rules).
NEEDS_ARGUMENTS = {"fetch_worker", "fetcher_runtime", "fetch_run_reports"}


def servicer_names(container: type[Core]) -> set[str]:
    return {name for name in container.providers if name.endswith("_servicer")}


@pytest.mark.parametrize("process", sorted(ROOTS))
def test_a_process_container_holds_the_servicers_of_what_it_serves_only(process: str) -> None:
    container = ROOTS[process]
    served = SERVES.get(process, ())
    for service in served:
        service.servicer(container)  # its provider is there
    expected = {
        name
        for s in served
        for name, p in container.providers.items()
        if p is s.servicer(container)
    }
    assert servicer_names(container) == expected
    assert len(expected) == len(served)


def test_the_all_in_one_container_is_every_part_with_each_provider_once() -> None:
    every = Container.providers
    for process, container in ROOTS.items():
        assert set(container.providers) <= set(every), process
    c = Container(settings=load([], {}))
    c.db_pool.override(providers.Object(object()))
    # the use cases both endpoints share are one object (one cache of callers, one queue)
    assert c.access_usecases() is c.access_usecases()
    assert c.setup_servicer()._uc is c.setup_usecases()  # type: ignore[attr-defined]
    # (the query server's reads go through their own use cases over the read pool, issue 15)


def test_the_roots_use_their_own_containers() -> None:
    """Each console script composes its process from its own container class."""
    sources = {
        "collector": collector,
        "query": query,
        "health": health,
        "fetcher": fetcher,
        "worker": worker,
        "all_in_one": all_in_one,
    }
    for process, module in sources.items():
        text = pathlib.Path(module.__file__ or "").read_text()
        assert f"container={ROOTS[process].__name__}" in text, process
        assert f'process="{process}"' in text, process


@pytest.mark.parametrize("process", sorted(ROOTS))
async def test_every_provider_wires_from_the_settings_its_process_loads(process: str) -> None:
    """With only the process's own settings loaded (reading any other is an error) and the
    resources replaced (``override``), every provider of its container can be built."""
    container: Any = ROOTS[process](settings=load([], {}, process=process))
    container.db_pool.override(providers.Object(object()))
    container.redis.override(providers.Object(Redis()))  # a client that connects on use
    built = 0
    for name, provider in container.providers.items():
        if name in NEEDS_ARGUMENTS or isinstance(provider, providers.Dependency):
            continue
        made = provider()
        if inspect.isawaitable(made):
            await made
        built += 1
    assert built > 5
