"""Places: GeoNames cities, the nearest city of a point, and geodesic distance on the sphere.

The nearest-city rule (one source, used by every adapter and checked against PostGIS):

1. A **district** is a place that lies within ``DISTRICT_REACH_M_PER_SQRT_POPULATION`` x
   sqrt(population of C) metres (great circle) of a place C with at least
   ``DISTRICT_SIZE_RATIO`` times its population and at least
   ``DISTRICT_MIN_CITY_POPULATION`` inhabitants (Berlin, 3.4 M: 14.8 km; a town of 5,000:
   570 m). Its parent is the most populous such C (ties: the lower GeoNames id).
2. A place's **city** is the place itself if it is no district, else its parent's city (the
   chain ends: each parent is at least five times bigger). Arverne -> New York City.
3. The **nearest city** of a point is the city of the nearest place, districts included:
   nearest by ``distance_m``, ties by the lower GeoNames id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from domain.model import GeoPoint

# The sphere PostGIS uses for geography without the spheroid: WGS84's mean radius (2a + b) / 3.
EARTH_RADIUS_M = 6_371_008.771415059

DISTRICT_REACH_M_PER_SQRT_POPULATION = 8.0
DISTRICT_SIZE_RATIO = 5
DISTRICT_MIN_CITY_POPULATION = 5_000


def _radians(p: GeoPoint) -> tuple[float, float]:
    """Latitude and longitude in radians, rounded as PostGIS's ``geographic_point_init``."""
    lon = math.pi * p.longitude / 180.0
    return math.pi * p.latitude / 180.0, (math.pi if lon == -math.pi else lon)


def _central_angle(lat_s: float, lon_s: float, lat_e: float, lon_e: float) -> float:
    """PostGIS's ``sphere_distance`` (Vincenty's formula on the sphere), operation for
    operation, so that distances (and so orders and ties) agree with the database's."""
    d_lon = lon_e - lon_s
    cos_d_lon = math.cos(d_lon)
    cos_lat_e, sin_lat_e = math.cos(lat_e), math.sin(lat_e)
    cos_lat_s, sin_lat_s = math.cos(lat_s), math.sin(lat_s)
    a1 = cos_lat_e * math.sin(d_lon)
    a2 = cos_lat_s * sin_lat_e - sin_lat_s * cos_lat_e * cos_d_lon
    a = math.sqrt(a1 * a1 + a2 * a2)
    b = sin_lat_s * sin_lat_e + cos_lat_s * cos_lat_e * cos_d_lon
    return math.atan2(a, b)


def distance_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in metres on the mean sphere (within 0.5 % of the ellipsoid's),
    computed as PostGIS computes ``a <-> b``, ``ST_Distance(a, b, false)`` and
    ``ST_DWithin(a, b, d, false)`` on geography (to the last bit or two)."""
    return EARTH_RADIUS_M * _central_angle(*_radians(a), *_radians(b))


@dataclass(frozen=True, slots=True)
class City:
    """A populated place from GeoNames (``geonameid`` is GeoNames' own id)."""

    geonameid: int
    name: str
    country_code: str
    position: GeoPoint
    admin1_code: str = ""
    population: int = 0


@dataclass(frozen=True, slots=True)
class NearestCity:
    city: City
    distance_m: float


# --- Districts -------------------------------------------------------------------------------


def district_reach_m(city: City) -> float:
    """How far from ``city`` a smaller place still counts as its district."""
    return DISTRICT_REACH_M_PER_SQRT_POPULATION * math.sqrt(city.population)


def is_district_of(place: City, city: City) -> bool:
    """Whether ``place`` is a district of the much bigger ``city`` (rule 1 above)."""
    return (
        place.geonameid != city.geonameid
        and city.population >= DISTRICT_MIN_CITY_POPULATION
        and place.population * DISTRICT_SIZE_RATIO <= city.population
        and distance_m(place.position, city.position) <= district_reach_m(city)
    )


def district_parent(place: City, near: Iterable[City]) -> City | None:
    """The parent of ``place`` among ``near`` (any superset of the places within the biggest
    reach of it), or None if it is no district."""
    parents = [c for c in near if is_district_of(place, c)]
    return min(parents, key=lambda c: (-c.population, c.geonameid), default=None)


def cities_of_districts(parents: Mapping[int, int]) -> dict[int, int]:
    """Each district's city (rule 2), from each district's parent (by GeoNames id)."""
    out: dict[int, int] = {}
    for place in parents:
        city = parents[place]
        while city in parents:
            city = parents[city]
        out[place] = city
    return out


# --- The nearest place -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """A GeoNames place as the nearest-city search sees it: where it is and the city it
    stands for (itself, or the city it is a district of)."""

    geonameid: int
    position: GeoPoint
    city: City
    lat_rad: float = 0.0  # the position as PostGIS sees it; Place.of fills these
    lon_rad: float = 0.0

    @classmethod
    def of(cls, geonameid: int, position: GeoPoint, city: City) -> Place:
        return cls(geonameid, position, city, *_radians(position))


def place_distances(point: GeoPoint) -> Callable[[Place], float]:
    """``distance_m(place.position, point)`` for many places, the point's trigonometry once."""
    lat_e, lon_e = _radians(point)

    def distance(place: Place) -> float:
        return EARTH_RADIUS_M * _central_angle(place.lat_rad, place.lon_rad, lat_e, lon_e)

    return distance


def nearest_place(point: GeoPoint, places: Iterable[Place]) -> tuple[Place, float] | None:
    """The nearest of ``places`` to ``point`` and its distance (rule 3: ties by id); None if
    there are none. PostGIS's ``ORDER BY position <-> point, geonameid`` computes the same."""
    distance = place_distances(point)
    best: tuple[float, int, Place] | None = None
    for place in places:
        key = (distance(place), place.geonameid, place)
        if best is None or key[:2] < best[:2]:
            best = key
    return (best[2], best[0]) if best else None


# --- Grid cells (what the geocoding cache is keyed by) ---------------------------------------

Cell = tuple[int, int]


def cell_of(point: GeoPoint, cell_deg: float) -> Cell:
    """The grid cell of a point: latitude and longitude floored to ``cell_deg``."""
    return (math.floor(point.latitude / cell_deg), math.floor(point.longitude / cell_deg))


def cell_bounds(cell: Cell, cell_deg: float) -> tuple[GeoPoint, GeoPoint]:
    """South-west and north-east corners of the part of a cell that is on the globe."""
    lat0, lon0 = cell[0] * cell_deg, cell[1] * cell_deg
    return (
        GeoPoint(min(90.0, max(-90.0, lat0)), min(180.0, max(-180.0, lon0))),
        GeoPoint(min(90.0, lat0 + cell_deg), min(180.0, lon0 + cell_deg)),
    )


def cell_center(cell: Cell, cell_deg: float) -> GeoPoint:
    sw, ne = cell_bounds(cell, cell_deg)
    return GeoPoint((sw.latitude + ne.latitude) / 2, (sw.longitude + ne.longitude) / 2)


def cell_radius_m(cell: Cell, cell_deg: float) -> float:
    """The farthest any point of the cell is from its centre: the farthest corner (on the
    sphere, distance from the centre grows with the longitude difference along a parallel and
    has no interior maximum along a meridian within a cell narrower than 180 degrees)."""
    sw, ne = cell_bounds(cell, cell_deg)
    centre = cell_center(cell, cell_deg)
    return max(
        distance_m(centre, GeoPoint(lat, lon))
        for lat in (sw.latitude, ne.latitude)
        for lon in (sw.longitude, ne.longitude)
    )


# Absorbs rounding in the bound below: distances (1e-9 m) and points a hair outside their
# cell's computed bounds (floor(lat / cell_deg) of a float: 1e-14 degrees), all far below 1 m.
CANDIDATE_SLACK_M = 1.0


def cell_candidate_slack_m(cell: Cell, cell_deg: float) -> float:
    """Every place that is nearest to some point of the cell lies within D + this of the
    cell's centre c, where D is the distance from c to its nearest place P. For x in the
    cell (|cx| <= r, the cell radius) and Q nearest to x: |cQ| <= |cx| + |xQ| <= r + |xP|
    <= r + (r + D). So the places within that radius of c, searched with ``nearest_place``,
    give every point of the cell exactly its nearest place."""
    return 2 * cell_radius_m(cell, cell_deg) + CANDIDATE_SLACK_M
