"""Checking the backing services, for health reporting."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from domain.ports.health import DependencyProbe


@dataclass(frozen=True, slots=True)
class DependencyStatus:
    name: str
    healthy: bool
    detail: str = ""


class CheckDependencies:
    """Probe every dependency concurrently, each bounded by ``timeout_s``."""

    def __init__(self, probes: Sequence[DependencyProbe], timeout_s: float) -> None:
        self._probes, self._timeout_s = list(probes), timeout_s

    async def __call__(self) -> dict[str, DependencyStatus]:
        results = await asyncio.gather(*(self._one(p) for p in self._probes))
        return {r.name: r for r in results}

    async def _one(self, probe: DependencyProbe) -> DependencyStatus:
        try:
            async with asyncio.timeout(self._timeout_s):
                await probe.check()
        except TimeoutError:
            return DependencyStatus(probe.name, False, f"no answer within {self._timeout_s}s")
        except Exception as exc:  # any failure of the probe means unhealthy
            return DependencyStatus(probe.name, False, f"{type(exc).__name__}: {exc}"[:200])
        return DependencyStatus(probe.name, True)
