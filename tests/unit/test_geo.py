"""The nearest-city rule of ``domain.geo``: distances, districts, ties, and the candidate
bound that lets a cache of grid cells answer exactly (poles and antimeridian included)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.geo import (
    City,
    Place,
    cell_bounds,
    cell_candidate_slack_m,
    cell_center,
    cell_of,
    cell_radius_m,
    cities_of_districts,
    distance_m,
    district_parent,
    is_district_of,
    nearest_place,
)
from domain.model import GeoPoint

lats = st.floats(-90, 90, allow_nan=False)
lons = st.floats(-180, 180, allow_nan=False)
points = st.builds(GeoPoint, lats, lons)
# Cells where it gets awkward: near the poles and the antimeridian, and anywhere.
cell_degs = st.sampled_from([0.01, 0.05, 0.25, 1.0])


def haversine_m(a: GeoPoint, b: GeoPoint) -> float:
    p1, p2 = math.radians(a.latitude), math.radians(b.latitude)
    h = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(b.longitude - a.longitude) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def city(gid: int, lat: float, lon: float, population: int = 1000) -> City:
    return City(gid, f"c{gid}", "XX", GeoPoint(lat, lon), population=population)


def place(c: City) -> Place:
    return Place.of(c.geonameid, c.position, c)


@given(points, points)
def test_distance_is_the_great_circle_on_the_mean_sphere(a: GeoPoint, b: GeoPoint) -> None:
    assert distance_m(a, b) == pytest.approx(haversine_m(a, b), rel=1e-6, abs=1e-3)
    assert distance_m(a, b) == pytest.approx(distance_m(b, a), rel=1e-12, abs=1e-6)


def test_distance_across_the_antimeridian_and_at_the_poles() -> None:
    assert distance_m(GeoPoint(-17.0, 179.99), GeoPoint(-17.0, -179.99)) < 2200
    assert distance_m(GeoPoint(90, 0), GeoPoint(90, 123)) < 1e-6
    assert distance_m(GeoPoint(0, -180), GeoPoint(0, 180)) < 1e-6


def test_nearest_place_breaks_ties_by_the_lower_id_whatever_the_order() -> None:
    a, b, c = city(7, 10.0, 10.0), city(3, 10.0, 10.0), city(5, 10.5, 10.0)
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        found = nearest_place(GeoPoint(10.1, 10.0), [place(x) for x in order])
        assert found is not None
        assert found[0].geonameid == 3
    assert nearest_place(GeoPoint(0, 0), []) is None


def test_a_place_near_a_much_bigger_city_is_its_district() -> None:
    berlin = city(1, 52.52, 13.41, 3_426_354)  # reach 8 m x 1851 = 14.8 km
    spandau = city(2, 52.53, 13.20, 39_653)  # 14.2 km west
    too_far = city(3, 52.52, 13.70, 20_000)  # 19.6 km east
    similar = city(4, 52.60, 13.41, 1_000_000)  # only 3.4x smaller
    assert is_district_of(spandau, berlin)
    assert not is_district_of(too_far, berlin)
    assert not is_district_of(similar, berlin)
    assert not is_district_of(berlin, berlin)
    assert not is_district_of(city(5, 52.52, 13.41, 0), city(6, 52.52, 13.41, 4_999))
    assert district_parent(spandau, [too_far, berlin, similar]) == berlin
    assert district_parent(too_far, [berlin, spandau]) is None


def test_the_most_populous_parent_wins_and_chains_end_at_a_city() -> None:
    small = city(1, 0.0, 0.0, 100)
    town = city(2, 0.0, 0.001, 10_000)
    big = city(3, 0.0, 0.002, 100_000)
    assert district_parent(small, [town, big]) == big
    assert cities_of_districts({1: 2, 2: 3, 4: 3}) == {1: 3, 2: 3, 4: 3}


@given(st.data(), cell_degs)
def test_every_point_of_its_cell_is_within_the_cell_radius(data: st.DataObject, deg: float) -> None:
    p = data.draw(points)
    cell = cell_of(p, deg)
    sw, ne = cell_bounds(cell, deg)
    # Up to rounding (1e-9 degrees is 0.1 mm; the candidate bound has 1 m to spare).
    assert sw.latitude - 1e-9 <= p.latitude <= ne.latitude + 1e-9
    assert sw.longitude - 1e-9 <= p.longitude <= ne.longitude + 1e-9
    q = GeoPoint(
        data.draw(st.floats(sw.latitude, ne.latitude)),
        data.draw(st.floats(sw.longitude, ne.longitude)),
    )
    centre = cell_center(cell, deg)
    assert distance_m(centre, q) <= cell_radius_m(cell, deg) + 1e-6


def near(base: GeoPoint, spread_deg: float) -> st.SearchStrategy[GeoPoint]:
    return st.builds(
        GeoPoint,
        st.floats(-spread_deg, spread_deg).map(lambda d: max(-90.0, min(90.0, base.latitude + d))),
        st.floats(-spread_deg, spread_deg).map(
            lambda d: (base.longitude + d + 180.0) % 360.0 - 180.0
        ),
    )


corners = st.sampled_from(
    [GeoPoint(0, 0), GeoPoint(89.99, 10), GeoPoint(-89.995, -170), GeoPoint(-17.5, 179.995)]
)


@settings(max_examples=300)
@given(st.data(), cell_degs, corners)
def test_the_places_within_the_bound_of_a_cell_hold_the_nearest_of_each_of_its_points(
    data: st.DataObject, deg: float, corner: GeoPoint
) -> None:
    spread = data.draw(st.sampled_from([0.02, 0.2, 2.0]))
    positions = data.draw(st.lists(near(corner, spread), min_size=1, max_size=30))
    everything = [place(city(i, p.latitude, p.longitude)) for i, p in enumerate(positions)]
    x = data.draw(near(corner, spread))
    cell = cell_of(x, deg)
    centre = cell_center(cell, deg)
    found = nearest_place(centre, everything)
    assert found is not None
    reach = found[1] + cell_candidate_slack_m(cell, deg)
    candidates = [p for p in everything if distance_m(p.position, centre) <= reach]
    assert nearest_place(x, candidates) == nearest_place(x, everything)


def test_the_bound_reaches_twice_the_cell_radius_beyond_the_centres_nearest_place() -> None:
    """The place nearest to a corner can lie almost D + 2r from the centre (D: the centre's
    nearest place, r: the cell radius), on the far side from that place: D + r is too short."""
    deg, cell = 1.0, (0, 0)
    centre, corner = cell_center(cell, deg), GeoPoint(1.0, 1.0)
    p = place(city(1, 0.3, 0.3))  # the centre's nearest place, away from the corner
    q = place(city(2, 1.69, 1.69))  # beyond the corner, along the same diagonal
    d = distance_m(p.position, centre)
    r = cell_radius_m(cell, deg)
    assert distance_m(q.position, corner) < distance_m(p.position, corner)
    assert distance_m(q.position, centre) > d + r
    reach = d + cell_candidate_slack_m(cell, deg)
    candidates = [x for x in (p, q) if distance_m(x.position, centre) <= reach]
    found = nearest_place(corner, candidates)
    assert found is not None
    assert found[0] == q
