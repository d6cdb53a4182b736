"""Nearest-city geocoding on PostGIS: GeoNames cities in ``cities`` (GiST on geography),
searched by KNN (``ORDER BY position <-> point LIMIT 1``), behind an in-process LRU cache
keyed by a coarse grid cell (the city nearest the cell's centre stands for the cell)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.geo import City, NearestCity, cell_center, cell_of, distance_m
from domain.model import GeoPoint

_CITY_COLUMNS = """ci.geonameid, ci.name, ci.country_code, ci.admin1_code, ci.population,
    ST_Y(ci.position::geometry) AS latitude, ST_X(ci.position::geometry) AS longitude"""


PART_OF_REACH_M = 8.0  # times sqrt(population)
PART_OF_SIZE_RATIO = 5


def city_of(r: asyncpg.Record, prefix: str = "") -> City | None:
    if r[f"{prefix}geonameid"] is None:
        return None
    return City(
        geonameid=r[f"{prefix}geonameid"],
        name=r[f"{prefix}name"],
        country_code=r[f"{prefix}country_code"],
        position=GeoPoint(r[f"{prefix}latitude"], r[f"{prefix}longitude"]),
        admin1_code=r[f"{prefix}admin1_code"],
        population=r[f"{prefix}population"],
    )


class PostgresGeocoder:
    """``Geocoder`` port. ``cell_deg`` 0 turns the cache off (exact nearest city)."""

    def __init__(self, pool: asyncpg.Pool, cache_size: int = 100_000, cell_deg: float = 0.01):
        self._pool = pool
        self._cache: OrderedDict[tuple[int, int], City | None] = OrderedDict()
        self._size, self._cell = cache_size, cell_deg
        self.hits = self.misses = 0

    async def _lookup(self, points: Sequence[GeoPoint]) -> list[City | None]:
        if not points:
            return []
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    f"""SELECT p.i, {_CITY_COLUMNS}
                        FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS p(lat, lon, i)
                        LEFT JOIN LATERAL (
                            SELECT * FROM cities WHERE part_of IS NULL
                            ORDER BY position <->
                                     ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography
                            LIMIT 1) ci ON true""",
                    [p.latitude for p in points],
                    [p.longitude for p in points],
                )
        found: list[City | None] = [None] * len(points)
        for r in rows:
            found[r["i"] - 1] = city_of(r)
        return found

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        if not self._cell or not self._size:
            cities = await self._lookup(points)
        else:
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
            cities = [resolved[c] for c in cells]
        return [
            NearestCity(city, distance_m(p, city.position)) if city else None
            for p, city in zip(points, cities, strict=True)
        ]


async def load_cities(conn: asyncpg.Connection, cities: Iterable[City]) -> int:
    """Replace the ``cities`` table's contents in one transaction (COPY), and mark the
    places that are part of a bigger city; returns the count. Reports keep the ids they
    were geocoded with (GeoNames ids are stable)."""
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE cities_staging (geonameid integer, name text, country_code text, "
            "admin1_code text, population bigint, latitude float8, longitude float8) "
            "ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "cities_staging",
            records=(
                (
                    c.geonameid,
                    c.name,
                    c.country_code,
                    c.admin1_code,
                    c.population,
                    c.position.latitude,
                    c.position.longitude,
                )
                for c in cities
            ),
        )
        await conn.execute("DELETE FROM cities")
        status = await conn.execute(
            """INSERT INTO cities
               SELECT DISTINCT ON (geonameid) geonameid, name, country_code, admin1_code,
                      population, ST_SetSRID(ST_MakePoint(longitude, latitude), 4326)::geography
               FROM cities_staging ORDER BY geonameid"""
        )
        # A place within 8 m x sqrt(population) of a city at least five times its size is
        # part of that city (Berlin: ~15 km; a town of 5,000: ~570 m).
        await conn.execute(
            """UPDATE cities c SET part_of = p.parent
               FROM (SELECT DISTINCT ON (c.geonameid) c.geonameid, b.geonameid AS parent
                     FROM cities b
                     JOIN cities c ON ST_DWithin(c.position, b.position,
                                                 $1 * sqrt(b.population), false)
                          AND c.population * $2 <= b.population AND c.geonameid <> b.geonameid
                          AND c.part_of IS NULL  -- all are: lets the partial index serve
                     WHERE b.population >= 1000 * $2
                     ORDER BY c.geonameid, b.population DESC, b.geonameid) p
               WHERE p.geonameid = c.geonameid""",
            PART_OF_REACH_M,
            PART_OF_SIZE_RATIO,
        )
    await conn.execute("ANALYZE cities")
    return int(status.rsplit(" ", 1)[1])


async def city_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM cities"))
