"""Nearest-city geocoding against real PostGIS with the GeoNames cities (cities1000): the
cached answer equals a direct KNN search and a brute force over every place, for random
points, coastlines and city edges, the antimeridian, the poles and the open sea."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.postgres.geocoding import PostgresGeocoder
from domain.geo import (
    EARTH_RADIUS_M,
    City,
    Place,
    distance_m,
    district_parent,
    nearest_place,
)
from domain.model import GeoPoint
from tests.conftest import throwaway_pool

pytestmark = pytest.mark.integration

NYC, ARVERNE, BERLIN = 5128581, 5107394, 2950159


@dataclass
class Places:
    """Every place, for the brute force: ids, positions (radians), the city each stands for."""

    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    city: dict[int, int]
    position: dict[int, GeoPoint]


@pytest.fixture(scope="module")
async def geo_pool(geo_template_database: str) -> AsyncIterator[asyncpg.Pool]:
    """One clone of the cities database for the module (the tests here only read)."""
    async with throwaway_pool(geo_template_database) as pool:
        yield pool


@pytest.fixture(scope="module")
async def places(geo_pool: asyncpg.Pool) -> Places:
    rows = await geo_pool.fetch(
        """SELECT geonameid, coalesce(part_of, geonameid) AS city,
                  ST_Y(position::geometry) AS lat, ST_X(position::geometry) AS lon
           FROM cities ORDER BY geonameid"""
    )
    return Places(
        ids=np.array([r["geonameid"] for r in rows]),
        lat=np.radians([r["lat"] for r in rows]),
        lon=np.radians([r["lon"] for r in rows]),
        city={r["geonameid"]: r["city"] for r in rows},
        position={r["geonameid"]: GeoPoint(r["lat"], r["lon"]) for r in rows},
    )


@pytest.fixture(scope="module")
async def cached(geo_pool: asyncpg.Pool) -> PostgresGeocoder:
    """Shared by all examples, so that later ones hit cells cached by earlier ones."""
    return PostgresGeocoder(geo_pool)


def brute_force(places: Places, p: GeoPoint) -> int:
    """The nearest place over all of them: haversine in numpy to find everything within a
    metre of the minimum, then the exact rule (``distance_m``, ties by id) among those."""
    lat, lon = math.radians(p.latitude), math.radians(p.longitude)
    h = (
        np.sin((places.lat - lat) / 2) ** 2
        + np.cos(lat) * np.cos(places.lat) * np.sin((places.lon - lon) / 2) ** 2
    )
    d = 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    close = places.ids[d <= d.min() + 1.0]
    ids = [int(i) for i in close]
    found = nearest_place(
        p, [Place.of(i, places.position[i], City(i, "", "", places.position[i])) for i in ids]
    )
    assert found is not None
    return found[0].geonameid


async def direct_knn(pool: asyncpg.Pool, points: list[GeoPoint]) -> list[int]:
    """PostGIS's KNN, nothing cached: the 8 nearest by ``<->``, then ties by id."""
    rows = await pool.fetch(
        """SELECT q.i, k.ids, k.ds
           FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS q(lat, lon, i)
           CROSS JOIN LATERAL (
               SELECT array_agg(geonameid ORDER BY d, geonameid) AS ids,
                      array_agg(d ORDER BY d, geonameid) AS ds
               FROM (SELECT geonameid, position <->
                            ST_SetSRID(ST_MakePoint(q.lon, q.lat), 4326)::geography AS d
                     FROM cities
                     ORDER BY position <-> ST_SetSRID(ST_MakePoint(q.lon, q.lat), 4326)::geography
                     LIMIT 8) n) k
           ORDER BY q.i""",
        [p.latitude for p in points],
        [p.longitude for p in points],
    )
    assert all(len(r["ds"]) < 8 or r["ds"][-1] > r["ds"][0] for r in rows)  # ties all seen
    return [r["ids"][0] for r in rows]


def report_point(lat: float, lon: float) -> GeoPoint:
    """As reports store positions: whole 1e-7 degrees, on the globe."""
    return GeoPoint(
        round(max(-90.0, min(90.0, lat)) * 1e7) / 1e7,
        round(((lon + 180.0) % 360.0 - 180.0) * 1e7) / 1e7,
    )


def around(lat: float, lon: float, spread_deg: float) -> st.SearchStrategy[GeoPoint]:
    offsets = st.floats(-spread_deg, spread_deg)
    return st.builds(lambda a, b: report_point(lat + a, lon + b), offsets, offsets)


anywhere = st.builds(report_point, st.floats(-90, 90), st.floats(-180, 180))
regions = st.one_of(
    anywhere,
    around(40.60, -73.78, 0.15),  # the Rockaways: Arverne, Atlantic Beach, Far Rockaway
    around(52.52, 13.40, 0.35),  # Berlin and its districts
    around(-17.5, 179.5, 2.0),  # Fiji, across the antimeridian
    around(-17.5, -179.9, 0.3),
    around(78.2, 15.6, 2.0),  # Svalbard
    around(86.0, 0.0, 4.0),  # towards the North Pole
    around(-80.0, 0.0, 10.0),  # Antarctica
    around(54.0, 8.0, 1.0),  # North Sea coast (Wadden islands)
    around(-33.9, 151.2, 0.3),  # Sydney's coast
    st.builds(  # exactly on cell edges
        lambda a, b: report_point(a / 100, b / 100),
        st.integers(-9000, 9000),
        st.integers(-18000, 18000),
    ),
)


async def check(
    geocoder: PostgresGeocoder, pool: asyncpg.Pool, ps: Places, points: list[GeoPoint]
) -> None:
    found = await geocoder.nearest(points)
    places = await geocoder.nearest_places(points)
    knn = await direct_knn(pool, points)
    for p, n, pl, k in zip(points, found, places, knn, strict=True):
        assert pl is not None
        assert n is not None
        assert pl.geonameid == k == brute_force(ps, p), p
        assert n.city.geonameid == ps.city[k], p
        assert n.distance_m == distance_m(p, n.city.position)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(points=st.lists(regions, min_size=1, max_size=40))
async def test_the_cached_answer_is_the_direct_knn_and_the_brute_force_answer(
    points: list[GeoPoint], cached: PostgresGeocoder, geo_pool: asyncpg.Pool, places: Places
) -> None:
    await check(cached, geo_pool, places, points)


async def test_a_tiny_cache_and_no_cache_answer_the_same(
    geo_pool: asyncpg.Pool, places: Places
) -> None:
    points = [report_point(52.3 + i * 0.004, 13.1 + i * 0.006) for i in range(120)]
    points += points[::-1]
    tiny = PostgresGeocoder(geo_pool, cache_size=8)
    direct = PostgresGeocoder(geo_pool, cell_deg=0)
    a = [n for i in range(0, len(points), 10) for n in await tiny.nearest(points[i : i + 10])]
    b = await direct.nearest(points)
    assert [x and x.city for x in a] == [x and x.city for x in b]
    distinct = len({(math.floor(p.latitude * 100), math.floor(p.longitude * 100)) for p in points})
    assert tiny.misses > distinct  # evicted and fetched again
    await check(tiny, geo_pool, places, points[:40])


async def test_arverne_is_new_york_city_not_atlantic_beach(
    cached: PostgresGeocoder,
) -> None:
    """The issue's case: 2.6 km from Arverne (a district of New York City), 5.9 km from
    Atlantic Beach; the old cache answered for the whole cell with Atlantic Beach."""
    point = GeoPoint(40.56782, -73.79337)  # at sea off Rockaway Beach
    arverne, atlantic_beach = GeoPoint(40.59122, -73.79597), GeoPoint(40.58899, -73.72902)
    assert round(distance_m(point, arverne), -2) == 2_600
    assert round(distance_m(point, atlantic_beach), -2) == 5_900
    (place,) = await cached.nearest_places([point])
    assert place is not None
    assert place.geonameid == ARVERNE
    (found,) = await cached.nearest([point])
    assert found is not None
    assert found.city.geonameid == NYC


async def test_berlin_districts_answer_berlin(cached: PostgresGeocoder) -> None:
    """Near Spandau, Kreuzberg, Charlottenburg and Koepenick (all within Berlin's reach)."""
    points = [GeoPoint(52.5531, 13.2001), GeoPoint(52.4990, 13.4040)]
    points += [GeoPoint(52.5160, 13.2840), GeoPoint(52.4450, 13.5760)]
    places = await cached.nearest_places(points)
    assert [p and p.geonameid for p in places] == [7290252, 2884161, 2940187, 2885656]
    for found in await cached.nearest(points):
        assert found is not None
        assert found.city.geonameid == BERLIN


async def test_the_poles_and_the_open_sea_get_the_nearest_place_however_far(
    cached: PostgresGeocoder, geo_pool: asyncpg.Pool, places: Places
) -> None:
    points = [GeoPoint(90, 0), GeoPoint(-90, 0), GeoPoint(-48.9, -123.4), GeoPoint(0, -140)]
    await check(cached, geo_pool, places, points)
    nemo = (await cached.nearest([GeoPoint(-48.9, -123.4)]))[0]  # Point Nemo
    assert nemo is not None
    assert nemo.distance_m > 1_000_000


async def test_without_places_there_is_no_city(pool: asyncpg.Pool) -> None:
    for geocoder in (PostgresGeocoder(pool), PostgresGeocoder(pool, cell_deg=0)):
        assert await geocoder.nearest([GeoPoint(52.5, 13.4), GeoPoint(0, 0)]) == [None, None]


async def test_coarse_cells_with_many_candidates_stay_exact(
    geo_pool: asyncpg.Pool, places: Places
) -> None:
    """Half-degree cells hold dozens of candidates each (more than one KNN round asks for)."""
    rng = random.Random(7)
    points = [report_point(52.5 + rng.uniform(-1, 1), 13.4 + rng.uniform(-1, 1)) for _ in range(60)]
    points += [report_point(89.8 + rng.uniform(0, 0.2), rng.uniform(-180, 180)) for _ in range(10)]
    coarse = PostgresGeocoder(geo_pool, cell_deg=0.5)
    await check(coarse, geo_pool, places, points)
    assert coarse.candidates / coarse.misses > 32


@pytest.mark.parametrize(
    ("south", "west", "north", "east"),
    [(52.3, 13.0, 52.7, 13.8), (40.5, -74.1, 40.9, -73.7), (35.5, 139.4, 35.9, 140.0)],
    ids=["Berlin", "New York", "Tokyo"],
)
async def test_districts_as_loaded_follow_the_domain_rule(
    geo_pool: asyncpg.Pool, south: float, west: float, north: float, east: float
) -> None:
    """Every place in the box, against every place within 0.7 degrees of latitude and 1.1
    of longitude (more than the biggest reach, 8 m x sqrt(37 M) = 49 km, at these latitudes)."""
    rows = await geo_pool.fetch(
        """SELECT geonameid, population, part_of, ST_Y(position::geometry) AS lat,
                  ST_X(position::geometry) AS lon
           FROM cities WHERE ST_Y(position::geometry) BETWEEN $1 - 0.7 AND $3 + 0.7
                         AND ST_X(position::geometry) BETWEEN $2 - 1.1 AND $4 + 1.1""",
        south,
        west,
        north,
        east,
    )
    near = [
        City(r["geonameid"], "", "", GeoPoint(r["lat"], r["lon"]), population=r["population"])
        for r in rows
    ]
    part_of = {r["geonameid"]: r["part_of"] for r in rows}
    inside = [
        c
        for c in near
        if south <= c.position.latitude <= north and west <= c.position.longitude <= east
    ]
    districts = 0
    for place in inside:
        parent = district_parent(place, near)
        if parent is None:
            assert part_of[place.geonameid] is None, place
        else:
            districts += 1
            assert part_of[place.geonameid] == (part_of[parent.geonameid] or parent.geonameid)
    assert districts > 10


async def test_concurrent_batches_sharing_a_small_cache_answer_exactly(
    geo_pool: asyncpg.Pool, places: Places
) -> None:
    """Two batches at once (the worker can run two): one evicts what the other had cached."""
    rng = random.Random(11)
    shared = PostgresGeocoder(geo_pool, cache_size=20)
    batches = [
        [
            report_point(52.5 + rng.uniform(-0.2, 0.2), 13.4 + rng.uniform(-0.3, 0.3))
            for _ in range(40)
        ]
        for _ in range(6)
    ]
    await shared.nearest(batches[0])
    results = await asyncio.gather(*(shared.nearest(b) for b in batches))
    direct = PostgresGeocoder(geo_pool, cell_deg=0)
    for batch, got in zip(batches, results, strict=True):
        assert [n and n.city for n in got] == [n and n.city for n in await direct.nearest(batch)]
