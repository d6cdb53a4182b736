"""Places: GeoNames cities, the nearest city of a point, and geodesic distance on the sphere."""

from __future__ import annotations

import math
from dataclasses import dataclass

from domain.model import GeoPoint

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


def distance_m(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance in metres (haversine). Within 0.5 % of the ellipsoid's."""
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat = lat2 - lat1
    dlon = math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


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


def cell_of(point: GeoPoint, cell_deg: float) -> tuple[int, int]:
    """The coarse grid cell of a point: what the geocoding cache is keyed by."""
    return (math.floor(point.latitude / cell_deg), math.floor(point.longitude / cell_deg))


def cell_center(cell: tuple[int, int], cell_deg: float) -> GeoPoint:
    return GeoPoint(min(90.0, (cell[0] + 0.5) * cell_deg), min(180.0, (cell[1] + 0.5) * cell_deg))
