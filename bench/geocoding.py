"""Benchmark of nearest-city geocoding, side by side in the same run: today's cache before
issue 13 (the city nearest a 0.01-degree cell's centre answers for the whole cell, districts
skipped), the exact candidate cache (every place that can be nearest to a point of the cell,
then each point's own nearest) and the direct KNN search without a cache. Prints reports/s,
cache hit rates and how many answers differ from the direct KNN search.

    .venv/bin/python -m bench.geocoding --trackers 2000 --reports 25
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections import OrderedDict
from collections.abc import Sequence

import asyncpg

from adapters.geonames import geonames_cities
from adapters.postgres.geocoding import PostgresGeocoder, city_of, load_cities
from adapters.postgres.pool import open_pool
from bench.throwaway import throwaway_database
from domain.geo import City, NearestCity, cell_center, cell_of, distance_m
from domain.model import GeoPoint

BATCH = 5_000  # reports per geocoding call, as the worker's batches give them


class CentreOfCellGeocoder:
    """The cache before issue 13, kept here as the baseline: one KNN per cell, from the
    cell's centre, among places that are no district; that city answers for the cell."""

    def __init__(self, pool: asyncpg.Pool, cache_size: int = 200_000, cell_deg: float = 0.01):
        self._pool, self._size, self._cell = pool, cache_size, cell_deg
        self._cache: OrderedDict[tuple[int, int], City | None] = OrderedDict()
        self.hits = self.misses = 0

    async def _lookup(self, points: Sequence[GeoPoint]) -> list[City | None]:
        rows = await self._pool.fetch(
            """SELECT p.i, ci.geonameid, ci.name, ci.country_code, ci.admin1_code,
                      ci.population, ST_Y(ci.position::geometry) AS latitude,
                      ST_X(ci.position::geometry) AS longitude
               FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS p(lat, lon, i)
               LEFT JOIN LATERAL (
                   SELECT * FROM cities WHERE part_of IS NULL
                   ORDER BY position <-> ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography
                   LIMIT 1) ci ON true""",
            [p.latitude for p in points],
            [p.longitude for p in points],
        )
        found: list[City | None] = [None] * len(points)
        for r in rows:
            found[r["i"] - 1] = city_of(r)
        return found

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        cells = [cell_of(p, self._cell) for p in points]
        missing = list(dict.fromkeys(c for c in cells if c not in self._cache))
        self.misses += len(missing)
        self.hits += len(points) - len(missing)
        found = await self._lookup([cell_center(c, self._cell) for c in missing])
        resolved = {c: self._cache[c] for c in cells if c in self._cache}
        resolved.update(zip(missing, found, strict=True))
        for c in dict.fromkeys(cells):
            self._cache[c] = resolved[c]
            self._cache.move_to_end(c)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return [
            NearestCity(city, distance_m(p, city.position)) if city else None
            for p, city in zip(points, (resolved[c] for c in cells), strict=True)
        ]


def fleet(
    starts: list[GeoPoint], trackers: int, reports: int, rng: random.Random
) -> list[GeoPoint]:
    """Trackers on the move: each starts near a town and walks ~300 m per report."""
    out = []
    for _ in range(trackers):
        s = rng.choice(starts)
        lat, lon = s.latitude + rng.uniform(-0.05, 0.05), s.longitude + rng.uniform(-0.05, 0.05)
        heading = rng.uniform(0, 2 * math.pi)
        for _ in range(reports):
            heading += rng.gauss(0, 0.3)
            lat = max(-89.9, min(89.9, lat + 0.0027 * math.cos(heading)))
            lon += 0.0027 * math.sin(heading) / max(0.05, math.cos(math.radians(lat)))
            lon = (lon + 180.0) % 360.0 - 180.0
            out.append(GeoPoint(round(lat, 7), round(lon, 7)))
    rng.shuffle(out)  # reports of many trackers in each batch, as the worker sees them
    return out


async def run(geocoder: object, points: list[GeoPoint]) -> tuple[float, list[int | None]]:
    found: list[int | None] = []
    t = time.perf_counter()
    for i in range(0, len(points), BATCH):
        found += [
            n.city.geonameid if n else None
            for n in await geocoder.nearest(points[i : i + BATCH])  # type: ignore[attr-defined]
        ]
    return len(points) / (time.perf_counter() - t), found


async def bench(trackers: int, reports: int, sample: int) -> None:
    rng = random.Random(13)
    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        t = time.perf_counter()
        n = await load_cities(conn, geonames_cities(1000))
        print(f"cities loaded (cities1000): {n} in {time.perf_counter() - t:.1f} s")
        starts = [
            GeoPoint(r["lat"], r["lon"])
            for r in await conn.fetch(
                """SELECT ST_Y(position::geometry) AS lat, ST_X(position::geometry) AS lon
                   FROM cities WHERE population >= 15000"""
            )
        ]
        await conn.close()
        points = fleet(starts, trackers, reports, rng)
        pool = await open_pool(url, max_size=4)
        try:
            old, new = CentreOfCellGeocoder(pool), PostgresGeocoder(pool, cache_size=200_000)
            direct = PostgresGeocoder(pool, cell_deg=0)
            print(f"{len(points)} reports of {trackers} moving trackers, batches of {BATCH}")
            old_cold, old_found = await run(old, points)
            new_cold, new_found = await run(new, points)
            old_cells, new_cells, cands = old.misses, new.misses, new.candidates
            old_warm, _ = await run(old, points)
            new_warm, _ = await run(new, points)
            part = points[:sample]
            direct_rate, truth = await run(direct, part)
            wrong_old = sum(1 for a, b in zip(old_found, truth, strict=False) if a != b)
            wrong_new = sum(1 for a, b in zip(new_found, truth, strict=False) if a != b)
            print(f"cells: {new_cells}; exact cache fetched {cands / new_cells:.2f} places/cell")
            print(
                f"{'':28s} {'cold reports/s':>15s} {'warm reports/s':>15s} "
                f"{'hit rate (cold)':>16s} {'wrong answers':>14s}"
            )
            for name, cold, warm, misses, wrong in (
                ("today's cache (cell centre)", old_cold, old_warm, old_cells, wrong_old),
                ("exact candidate cache", new_cold, new_warm, new_cells, wrong_new),
            ):
                print(
                    f"{name:28s} {cold:15.0f} {warm:15.0f} "
                    f"{1 - misses / len(points):16.1%} "
                    f"{wrong:6d}/{len(truth)} ({wrong / len(truth):.1%})"
                )
            print(f"{'direct KNN, no cache':28s} {direct_rate:15.0f} {'(truth)':>48s}")
            print(
                f"exact / today's: cold {new_cold / old_cold:.2f}x, "
                f"warm {new_warm / old_warm:.2f}x; "
                f"exact cache / direct KNN: cold {new_cold / direct_rate:.1f}x, "
                f"warm {new_warm / direct_rate:.1f}x"
            )
        finally:
            await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trackers", type=int, default=2000)
    ap.add_argument("--reports", type=int, default=25, help="reports per tracker")
    ap.add_argument("--sample", type=int, default=5000, help="reports checked by direct KNN")
    a = ap.parse_args()
    asyncio.run(bench(a.trackers, a.reports, a.sample))


if __name__ == "__main__":
    main()
