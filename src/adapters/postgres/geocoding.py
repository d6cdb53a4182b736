"""Nearest-city geocoding on PostGIS: GeoNames places in ``cities`` (GiST on geography),
each standing for its city (``part_of``, the district rule of ``domain.geo``).

The answer for a point is the city of its nearest place (``domain.geo`` rule 3), exactly
as a direct KNN search (``ORDER BY position <-> point, geonameid``) gives it. An in-process
LRU cache keyed by grid cell holds, per cell, every place that can be nearest to some point
of the cell (``cell_candidate_slack_m``); each point then picks its own nearest among them
with the same distance function the database uses."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.geo import (
    CANDIDATE_SLACK_M,
    DISTRICT_MIN_CITY_POPULATION,
    DISTRICT_REACH_M_PER_SQRT_POPULATION,
    DISTRICT_SIZE_RATIO,
    Cell,
    City,
    NearestCity,
    Place,
    cell_candidate_slack_m,
    cell_center,
    cell_of,
    cities_of_districts,
    distance_m,
    district_parent,
    nearest_place,
)
from domain.model import GeoPoint

_CITY_COLUMNS = """ci.geonameid, ci.name, ci.country_code, ci.admin1_code, ci.population,
    ST_Y(ci.position::geometry) AS latitude, ST_X(ci.position::geometry) AS longitude"""

# Per centre point, those of its k nearest places (KNN on the GiST index, in exact ``<->``
# order) within (distance to the nearest + slack), each with the city it stands for.
_NEAR = f"""
    SELECT x.i, x.geonameid AS place_id, x.d AS place_d,
           ST_Y(x.position::geometry) AS place_lat, ST_X(x.position::geometry) AS place_lon,
           {_CITY_COLUMNS}
    FROM (SELECT q.i, q.slack, n.*, min(n.d) OVER (PARTITION BY q.i) AS d0
          FROM unnest($1::float8[], $2::float8[], $3::float8[])
               WITH ORDINALITY AS q(lat, lon, slack, i)
          CROSS JOIN LATERAL (
              SELECT c.geonameid, c.part_of, c.position,
                     c.position <-> ST_SetSRID(ST_MakePoint(q.lon, q.lat), 4326)::geography AS d
              FROM cities c
              ORDER BY c.position <-> ST_SetSRID(ST_MakePoint(q.lon, q.lat), 4326)::geography
              LIMIT $4) n) x
    JOIN cities ci ON ci.geonameid = coalesce(x.part_of, x.geonameid)
    WHERE x.d <= x.d0 + x.slack"""
FIRST_K = 4  # nearest places asked per centre at first; 1.7 of them are within reach on average


def city_of(r: asyncpg.Record, prefix: str = "") -> City | None:
    return None if r[f"{prefix}geonameid"] is None else _city(r, prefix)


def _city(r: asyncpg.Record, prefix: str = "") -> City:
    return City(
        geonameid=r[f"{prefix}geonameid"],
        name=r[f"{prefix}name"],
        country_code=r[f"{prefix}country_code"],
        position=GeoPoint(r[f"{prefix}latitude"], r[f"{prefix}longitude"]),
        admin1_code=r[f"{prefix}admin1_code"],
        population=r[f"{prefix}population"],
    )


class PostgresGeocoder:
    """``Geocoder`` port. ``cell_deg`` 0 (or ``cache_size`` 0) turns the cache off: each
    point is then one direct KNN search. Both ways give the same answers."""

    def __init__(self, pool: asyncpg.Pool, cache_size: int = 100_000, cell_deg: float = 0.01):
        if not 0 <= cell_deg <= 1:
            raise ValueError("cell_deg must be within [0, 1] degrees")
        self._pool = pool
        self._cache: OrderedDict[Cell, tuple[Place, ...]] = OrderedDict()
        self._size, self._cell = cache_size, cell_deg
        # One object per place and city, however many cells share them.
        self._places: dict[int, Place] = {}
        self._cities: dict[int, City] = {}
        self.hits = self.misses = 0
        self.candidates = 0  # places fetched for the cells missed, in all

    async def _candidates(
        self, centres: Sequence[GeoPoint], slacks_m: Sequence[float]
    ) -> list[list[tuple[Place, float]]]:
        """Per centre, the places within (distance to its nearest place + slack) of it, each
        with its distance as the database computes it. From the k nearest: unless all k are
        within that reach, every place within it is among them; if they are, ask for 4k."""
        found: list[list[tuple[Place, float]]] = [[] for _ in centres]
        pending, k = list(range(len(centres))), FIRST_K
        while pending:
            with unavailable_on_connection_error():
                async with self._pool.acquire() as conn:
                    rows = await conn.fetch(
                        _NEAR,
                        [centres[i].latitude for i in pending],
                        [centres[i].longitude for i in pending],
                        [slacks_m[i] for i in pending],
                        k,
                    )
            nearest: list[list[tuple[Place, float]]] = [[] for _ in pending]
            for r in rows:
                nearest[r["i"] - 1].append((self._place(r), r["place_d"]))
            more = []
            for i, near in zip(pending, nearest, strict=True):
                found[i] = near
                if len(near) == k:
                    more.append(i)
            pending, k = more, 4 * k
        return found

    def _place(self, r: asyncpg.Record) -> Place:
        place = self._places.get(r["place_id"])
        if place is None:
            city = self._cities.get(r["geonameid"])
            if city is None:
                city = self._cities[r["geonameid"]] = _city(r)
            position = GeoPoint(r["place_lat"], r["place_lon"])
            place = self._places[r["place_id"]] = Place.of(r["place_id"], position, city)
        return place

    async def _direct(self, points: Sequence[GeoPoint]) -> list[Place | None]:
        """The direct KNN search: the nearest place of each point, ties by the lower id."""
        found = await self._candidates(points, [0.0] * len(points))
        return [min(c, key=lambda pd: (pd[1], pd[0].geonameid))[0] if c else None for c in found]

    async def _cached(self, points: Sequence[GeoPoint]) -> list[Place | None]:
        cells = [cell_of(p, self._cell) for p in points]
        # Taken before the query: a batch running meanwhile may evict cells from the cache.
        resolved = {c: self._cache[c] for c in cells if c in self._cache}
        missing = list(dict.fromkeys(c for c in cells if c not in resolved))
        self.misses += len(missing)
        self.hits += len(points) - len(missing)
        found = await self._candidates(
            [cell_center(c, self._cell) for c in missing],
            [cell_candidate_slack_m(c, self._cell) for c in missing],
        )
        self.candidates += sum(len(f) for f in found)
        resolved.update((c, tuple(p for p, _ in f)) for c, f in zip(missing, found, strict=True))
        for c in dict.fromkeys(cells):
            self._cache[c] = resolved[c]
            self._cache.move_to_end(c)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        out: list[Place | None] = []
        for p, c in zip(points, cells, strict=True):
            near = resolved[c]
            if len(near) < 2:  # most cells: one place is nearest to all of it
                out.append(near[0] if near else None)
            else:
                best = nearest_place(p, near)
                out.append(best[0] if best else None)
        return out

    async def nearest_places(self, points: Sequence[GeoPoint]) -> list[Place | None]:
        """The nearest GeoNames place of each point (None when no place is known at all)."""
        if not self._cell or not self._size:
            return await self._direct(points)
        return await self._cached(points)

    async def nearest(self, points: Sequence[GeoPoint]) -> list[NearestCity | None]:
        places = await self.nearest_places(points)
        return [
            NearestCity(pl.city, distance_m(p, pl.city.position)) if pl else None
            for p, pl in zip(points, places, strict=True)
        ]


# Pairs (place, bigger place within reach): a superset of the district rule's, which
# ``domain.geo.district_parent`` then decides.
_DISTRICT_PAIRS = """
    SELECT c.geonameid, c.population, ST_Y(c.position::geometry) AS lat,
           ST_X(c.position::geometry) AS lon, b.geonameid AS b_id, b.population AS b_pop,
           ST_Y(b.position::geometry) AS b_lat, ST_X(b.position::geometry) AS b_lon
    FROM cities b
    JOIN cities c ON ST_DWithin(c.position, b.position, $1 * sqrt(b.population) + $4, false)
                 AND c.population * $2 <= b.population AND c.geonameid <> b.geonameid
    WHERE b.population >= $3"""


def _bare(geonameid: int, population: int, lat: float, lon: float) -> City:
    return City(geonameid, "", "", GeoPoint(lat, lon), population=population)


async def load_cities(conn: asyncpg.Connection, cities: Iterable[City]) -> int:
    """Replace the ``cities`` table's contents in one transaction (COPY), and mark each
    district with the city it stands for; returns the count. Reports keep the ids they
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
        near: dict[int, tuple[City, list[City]]] = {}
        for r in await conn.fetch(
            _DISTRICT_PAIRS,
            DISTRICT_REACH_M_PER_SQRT_POPULATION,
            DISTRICT_SIZE_RATIO,
            DISTRICT_MIN_CITY_POPULATION,
            CANDIDATE_SLACK_M,
        ):
            entry = near.setdefault(
                r["geonameid"],
                (_bare(r["geonameid"], r["population"], r["lat"], r["lon"]), []),
            )
            entry[1].append(_bare(r["b_id"], r["b_pop"], r["b_lat"], r["b_lon"]))
        parents: dict[int, int] = {}
        for place, bigger in near.values():
            parent = district_parent(place, bigger)
            if parent is not None:
                parents[place.geonameid] = parent.geonameid
        part_of = cities_of_districts(parents)
        await conn.execute(
            """UPDATE cities c SET part_of = v.city
               FROM unnest($1::int[], $2::int[]) AS v(place, city)
               WHERE c.geonameid = v.place""",
            list(part_of),
            list(part_of.values()),
        )
    await conn.execute("ANALYZE cities")
    return int(status.rsplit(" ", 1)[1])


async def city_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM cities"))
