"""Simulated journeys: a tag sits in storage, travels to a delivery place, and stays there.
Reports come irregularly, with Find My's spread of confidence and accuracy; some are late
(seen earlier than they are published), some repeat."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True, slots=True)
class Journey:
    start: datetime
    storage: tuple[float, float]
    delivery: tuple[float, float]
    storage_s: float = 120.0
    travel_s: float = 300.0

    def position_at(self, t: datetime) -> tuple[float, float]:
        elapsed = (t - self.start).total_seconds()
        if elapsed <= self.storage_s:
            return self.storage
        f = min(1.0, (elapsed - self.storage_s) / self.travel_s)
        return (
            self.storage[0] + f * (self.delivery[0] - self.storage[0]),
            self.storage[1] + f * (self.delivery[1] - self.storage[1]),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Journey:
        return cls(
            start=datetime.fromisoformat(data["start"]),
            storage=(float(data["storage"][0]), float(data["storage"][1])),
            delivery=(float(data["delivery"][0]), float(data["delivery"][1])),
            storage_s=float(data.get("storage_s", 120)),
            travel_s=float(data.get("travel_s", 300)),
        )


def _jitter(lat: float, lon: float, metres: float, rng: random.Random) -> tuple[float, float]:
    """A point about ``metres`` away in a random direction."""
    d = rng.gauss(0, metres / 2)
    angle = rng.uniform(0, 2 * math.pi)
    dlat = d * math.cos(angle) / 111_320
    dlon = d * math.sin(angle) / (111_320 * max(0.1, math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def sample_reports(
    journey: Journey, since: datetime, until: datetime, rng: random.Random
) -> list[dict[str, Any]]:
    """Reports of the interval, about one a minute with gaps; shaped for Simulator.add_reports."""
    out: list[dict[str, Any]] = []
    t = since + timedelta(seconds=rng.uniform(20, 90))
    while t < until:
        confidence = rng.choices([1, 2, 3], weights=[1, 3, 4])[0]
        accuracy = int(min(255, rng.choice([5, 10, 20, 35, 65, 120, 250]) * rng.uniform(0.7, 1.3)))
        # Some reports surface late: seen (and placed) well before they reach the network.
        seen = max(since, t - timedelta(minutes=rng.choice([0, 0, 0, 5, 30, 120])))
        lat, lon = _jitter(*journey.position_at(seen), accuracy, rng)
        report = {
            "time": seen.isoformat(),
            "latitude": lat,
            "longitude": lon,
            "confidence": confidence,
            "accuracy_m": accuracy,
            "long_form": rng.random() < 0.3,
        }
        out.append(report)
        if rng.random() < 0.1:
            out.append(dict(report))  # the network repeats itself
        t += timedelta(seconds=rng.uniform(30, 150))
    return out
