"""Sign-in throttles: counted in this process, and a failover that uses this process's counts
while the shared store (Redis) cannot be reached, rather than failing sign-ins."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import DependencyUnavailable
from domain.ports.access import AttemptThrottle
from domain.ports.common import Clock
from domain.throttling import STRIKE_MEMORY, ThrottleKey

log = logging.getLogger(__name__)


@dataclass
class _State:
    count: int = 0
    window_end: datetime | None = None
    locked_until: datetime | None = None
    strikes: int = 0
    strikes_until: datetime | None = None


class MemoryAttemptThrottle:
    """The rule of ``domain.throttling`` in one process's memory, for at most ``size`` keys
    (the least recently used are forgotten, so a flood of addresses cannot grow it)."""

    def __init__(self, clock: Clock, size: int = 100_000) -> None:
        self._clock, self._size = clock, size
        self._states: OrderedDict[str, _State] = OrderedDict()

    def _state(self, name: str, now: datetime) -> _State:
        state = self._states.get(name) or _State()
        if state.window_end is not None and state.window_end <= now:
            state.count, state.window_end = 0, None
        if state.locked_until is not None and state.locked_until <= now:
            state.locked_until = None
        if state.strikes_until is not None and state.strikes_until <= now:
            state.strikes, state.strikes_until = 0, None
        self._states[name] = state
        self._states.move_to_end(name)
        while len(self._states) > self._size:
            self._states.popitem(last=False)
        return state

    async def attempt(self, keys: Sequence[ThrottleKey]) -> timedelta | None:
        now = self._clock.now()
        states = [(key, self._state(key.name, now)) for key in keys]
        locks = [s.locked_until - now for _, s in states if s.locked_until is not None]
        if locks:
            return max(locks)
        wait: timedelta | None = None
        for key, state in states:
            state.count += 1
            if state.window_end is None:
                state.window_end = now + key.limit.window
            if state.count > key.limit.max_attempts:
                state.strikes += 1
                state.strikes_until = now + STRIKE_MEMORY
                lock = key.limit.lockout(state.strikes)
                state.locked_until = now + lock
                state.count, state.window_end = 0, None
                wait = lock if wait is None else max(wait, lock)
        return wait

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        for key in reset:
            state = self._states.get(key.name)
            if state is not None:
                state.count, state.window_end = 0, None
        for key in refund:
            state = self._states.get(key.name)
            if state is not None and state.count > 0:
                state.count -= 1


class FailoverAttemptThrottle:
    """The shared throttle while it answers within ``timeout_s``; this process's own counts
    for ``retry_after`` whenever it does not (each replica then limits on its own: looser,
    never open, and a sign-in never fails because Redis is down)."""

    def __init__(
        self,
        primary: AttemptThrottle,
        fallback: AttemptThrottle,
        clock: Clock,
        timeout_s: float = 0.5,
        retry_after: timedelta = timedelta(seconds=5),
    ) -> None:
        self._primary, self._fallback, self._clock = primary, fallback, clock
        self._timeout_s, self._retry_after = timeout_s, retry_after
        self._down_until: datetime | None = None

    def _use_fallback(self) -> bool:
        return self._down_until is not None and self._clock.now() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if not self._use_fallback():
            log.warning(
                "sign-in throttle: shared store unavailable, counting in this process",
                extra={"error": str(exc) or type(exc).__name__},
            )
        self._down_until = self._clock.now() + self._retry_after

    async def attempt(self, keys: Sequence[ThrottleKey]) -> timedelta | None:
        if not self._use_fallback():
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._primary.attempt(keys)
            except (DependencyUnavailable, TimeoutError) as exc:
                self._failed(exc)
        return await self._fallback.attempt(keys)

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        await self._fallback.succeeded(reset, refund)
        if not self._use_fallback():
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._primary.succeeded(reset, refund)
            except (DependencyUnavailable, TimeoutError) as exc:
                self._failed(exc)
