"""Ports of health reporting: a live probe of one backing service."""

from __future__ import annotations

from typing import Protocol


class DependencyProbe(Protocol):
    """A live check of one backing service, used by health reporting."""

    name: str

    async def check(self) -> None:
        """Return if the dependency answers; raise anything otherwise."""
        ...
