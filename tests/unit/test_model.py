"""Setup entities and value objects validate themselves at construction."""

from __future__ import annotations

import hashlib
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.model import (
    MAX_NAME_LENGTH,
    AdvertisementKey,
    Brand,
    Client,
    GeoPoint,
    Location,
    LocationKind,
    MacAddress,
    ProductionRun,
    Tracker,
    check_mac_matches,
    parse_id,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEY = AdvertisementKey(bytes(range(1, 29)))


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


def a_client(**overrides: Any) -> Client:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "create_time": T0,
        "update_time": T0,
        "display_name": "Acme",
    }
    return Client(**(values | overrides))


def a_run(**overrides: Any) -> ProductionRun:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "create_time": T0,
        "update_time": T0,
        "brand_id": uuid.uuid4(),
        "client_id": uuid.uuid4(),
        "display_name": "Spring 2025",
        "start_time": T0,
        "end_time": T0 + timedelta(days=30),
    }
    return ProductionRun(**(values | overrides))


def a_location(**overrides: Any) -> Location:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "create_time": T0,
        "update_time": T0,
        "production_run_id": uuid.uuid4(),
        "client_id": uuid.uuid4(),
        "kind": LocationKind.DELIVERY,
        "display_name": "Shop",
        "center": GeoPoint(52.52, 13.405),
        "radius_m": 250.0,
    }
    return Location(**(values | overrides))


def a_tracker(**overrides: Any) -> Tracker:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "create_time": T0,
        "update_time": T0,
        "client_id": uuid.uuid4(),
        "production_run_id": uuid.uuid4(),
        "advertisement_key": KEY,
    }
    return Tracker(**(values | overrides))


# -- GeoPoint --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [(0.0, 0.0), (90.0, 180.0), (-90.0, -180.0), (52.52, 13.405), (-33.87, 151.21)],
)
def test_geo_point_within_range_constructs(latitude: float, longitude: float) -> None:
    point = GeoPoint(latitude, longitude)
    assert (point.latitude, point.longitude) == (latitude, longitude)


@pytest.mark.parametrize(
    ("latitude", "longitude", "bad"),
    [
        (90.0001, 0.0, ["latitude"]),
        (-90.0001, 0.0, ["latitude"]),
        (0.0, 180.0001, ["longitude"]),
        (0.0, -180.0001, ["longitude"]),
        (math.nan, 0.0, ["latitude"]),
        (0.0, math.nan, ["longitude"]),
        (math.inf, 0.0, ["latitude"]),
        (0.0, -math.inf, ["longitude"]),
        (91.0, 181.0, ["latitude", "longitude"]),
        (math.nan, math.inf, ["latitude", "longitude"]),
    ],
)
def test_geo_point_out_of_range_names_every_bad_coordinate(
    latitude: float, longitude: float, bad: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        GeoPoint(latitude, longitude)
    assert fields_of(exc.value) == bad


@given(
    st.floats(min_value=-90.0, max_value=90.0),
    st.floats(min_value=-180.0, max_value=180.0),
)
def test_any_geo_point_inside_the_ranges_constructs(latitude: float, longitude: float) -> None:
    assert GeoPoint(latitude, longitude).latitude == latitude


@given(st.floats().filter(lambda x: not -90.0 <= x <= 90.0))
def test_any_latitude_outside_the_range_is_rejected(latitude: float) -> None:
    with pytest.raises(InvalidArgument) as exc:
        GeoPoint(latitude, 0.0)
    assert fields_of(exc.value) == ["latitude"]


# -- MacAddress ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "aa:bb:cc:0d:ee:ff",
        "AA:BB:CC:0D:EE:FF",
        "AA-BB-CC-0D-EE-FF",
        "aa-bb-cc-0d-ee-ff",
        "aabbcc0deeff",
        "AABBCC0DEEFF",
        "  aa:bb:cc:0d:ee:ff\n",
    ],
)
def test_mac_parse_accepts_the_three_styles_and_canonicalises(text: str) -> None:
    assert MacAddress.parse(text).value == "AA:BB:CC:0D:EE:FF"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa:bb-cc:dd:ee:ff",
        "aa:bb:cc:dd:ee-ff",
        "gg:bb:cc:dd:ee:ff",
        "aa.bb.cc.dd.ee.ff",
        "aa bb cc dd ee ff",
        "aabbccddeef",
        "aabbccddeeff0",
        "a:bb:cc:dd:ee:fff",
        "aa::bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff\nxx",
        "\uff11\uff11:bb:cc:dd:ee:ff",
    ],
)
def test_mac_parse_rejects_garbage_under_mac_address(text: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        MacAddress.parse(text)
    assert fields_of(exc.value) == ["mac_address"]


def test_mac_constructor_demands_the_canonical_form() -> None:
    with pytest.raises(InvalidArgument) as exc:
        MacAddress("aa:bb:cc:dd:ee:ff")
    assert fields_of(exc.value) == ["mac_address"]


@given(
    st.binary(min_size=6, max_size=6),
    st.sampled_from([":", "-", ""]),
    st.booleans(),
)
def test_any_six_bytes_in_any_accepted_style_parse_to_one_canonical_mac(
    raw: bytes, separator: str, upper: bool
) -> None:
    text = separator.join(f"{b:02x}" for b in raw)
    text = text.upper() if upper else text
    assert MacAddress.parse(text).value == ":".join(f"{b:02X}" for b in raw)


@given(st.text(max_size=40))
def test_mac_parse_of_any_text_is_canonical_or_invalid_argument(text: str) -> None:
    error: InvalidArgument | None = None
    try:
        mac = MacAddress.parse(text)
    except InvalidArgument as err:
        error = err
    if error is not None:
        assert fields_of(error) == ["mac_address"]
    else:
        digits = text.strip().replace(":", "").replace("-", "").upper()
        assert mac.value.replace(":", "") == digits
        assert MacAddress.parse(mac.value) == mac


@given(st.binary(min_size=28, max_size=28))
def test_mac_for_any_key_sets_top_two_bits_and_keeps_bytes_1_to_5(raw: bytes) -> None:
    mac = MacAddress.for_advertisement_key(AdvertisementKey(raw))
    octets = bytes.fromhex(mac.value.replace(":", ""))
    assert octets[0] == raw[0] | 0xC0
    assert octets[0] & 0xC0 == 0xC0
    assert octets[1:] == raw[1:6]
    assert MacAddress.parse(mac.value) == mac


def test_mac_for_a_known_key() -> None:
    key = AdvertisementKey(bytes.fromhex("0123456789ab") + bytes(22))
    assert MacAddress.for_advertisement_key(key).value == "C1:23:45:67:89:AB"


# -- AdvertisementKey ------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 27, 29, 32, 57])
def test_advertisement_key_of_wrong_length_is_rejected(length: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        AdvertisementKey(bytes(length))
    assert fields_of(exc.value) == ["advertisement_key"]


def test_hashed_advertisement_key_is_its_sha256() -> None:
    assert KEY.hashed == hashlib.sha256(KEY.value).digest()
    assert len(KEY.hashed) == 32


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
def test_blank_display_name_is_required(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        a_client(display_name=name)
    assert fields_of(exc.value) == ["display_name"]


def test_display_name_of_max_length_is_accepted_and_one_more_rejected() -> None:
    assert a_client(display_name="x" * MAX_NAME_LENGTH)
    with pytest.raises(InvalidArgument) as exc:
        a_client(display_name="x" * (MAX_NAME_LENGTH + 1))
    assert fields_of(exc.value) == ["display_name"]


@pytest.mark.parametrize(
    "make",
    [
        lambda name: Brand(
            id=uuid.uuid4(),
            create_time=T0,
            update_time=T0,
            client_id=uuid.uuid4(),
            display_name=name,
        ),
        lambda name: a_run(display_name=name),
        lambda name: a_location(display_name=name),
    ],
    ids=["brand", "production_run", "location"],
)
def test_every_named_resource_requires_a_display_name(make: Any) -> None:
    with pytest.raises(InvalidArgument) as exc:
        make(" ")
    assert fields_of(exc.value) == ["display_name"]


def test_tracker_display_name_is_optional_but_bounded() -> None:
    assert a_tracker(display_name="").display_name == ""
    with pytest.raises(InvalidArgument) as exc:
        a_tracker(display_name="x" * (MAX_NAME_LENGTH + 1))
    assert fields_of(exc.value) == ["display_name"]


def test_display_name_with_nul_character_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        a_client(display_name="Ac\x00me")


# -- ProductionRun ---------------------------------------------------------------------------


@pytest.mark.parametrize("end_offset", [timedelta(0), timedelta(seconds=-1), timedelta(days=-9)])
def test_run_ending_at_or_before_its_start_is_rejected_under_end_time(
    end_offset: timedelta,
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        a_run(start_time=T0, end_time=T0 + end_offset)
    assert fields_of(exc.value) == ["end_time"]


@pytest.mark.parametrize("name", ["start_time", "end_time"])
def test_run_with_naive_datetime_is_rejected(name: str) -> None:
    naive = {"start_time": datetime(2025, 1, 1), "end_time": datetime(2025, 2, 1)}[name]
    with pytest.raises(InvalidArgument) as exc:
        a_run(**{name: naive})
    assert fields_of(exc.value) == [name]


def test_run_accepts_other_time_zones() -> None:
    plus2 = timezone(timedelta(hours=2))
    run = a_run(start_time=datetime(2025, 1, 1, 2, tzinfo=plus2), end_time=T0 + timedelta(hours=1))
    assert run.end_time > run.start_time


def test_run_is_active_from_start_inclusive_to_end_exclusive() -> None:
    run = a_run(start_time=T0, end_time=T0 + timedelta(days=1))
    assert not run.is_active(T0 - timedelta(microseconds=1))
    assert run.is_active(T0)
    assert run.is_active(T0 + timedelta(hours=23))
    assert not run.is_active(T0 + timedelta(days=1))


# -- Location --------------------------------------------------------------------------------


@pytest.mark.parametrize("radius_m", [0.001, 1.0, 100_000.0])
def test_location_radius_within_bounds_is_accepted(radius_m: float) -> None:
    assert a_location(radius_m=radius_m).radius_m == radius_m


@pytest.mark.parametrize("radius_m", [0.0, -1.0, 100_000.001, math.nan, math.inf, -math.inf])
def test_location_radius_outside_bounds_is_rejected(radius_m: float) -> None:
    with pytest.raises(InvalidArgument) as exc:
        a_location(radius_m=radius_m)
    assert fields_of(exc.value) == ["radius_m"]


# -- Tracker ---------------------------------------------------------------------------------


def test_tracker_mac_is_derived_from_its_key() -> None:
    assert a_tracker().mac_address == MacAddress.for_advertisement_key(KEY)
    assert a_tracker().hashed_advertisement_key == KEY.hashed


# -- with_changes ----------------------------------------------------------------------------


def test_with_changes_applies_updatable_fields_and_sets_update_time() -> None:
    client = a_client()
    later = T0 + timedelta(hours=1)
    changed = client.with_changes({"display_name": "Acme GmbH"}, later)
    assert changed.display_name == "Acme GmbH"
    assert changed.update_time == later
    assert changed.create_time == client.create_time
    assert changed.id == client.id
    assert client.display_name == "Acme"


@pytest.mark.parametrize(
    ("entity", "name", "value"),
    [
        (a_client(), "id", uuid.uuid4()),
        (a_client(), "create_time", T0),
        (a_client(), "update_time", T0),
        (a_run(), "brand_id", uuid.uuid4()),
        (a_run(), "client_id", uuid.uuid4()),
        (a_location(), "production_run_id", uuid.uuid4()),
        (a_location(), "client_id", uuid.uuid4()),
        (a_tracker(), "client_id", uuid.uuid4()),
        (a_tracker(), "advertisement_key", AdvertisementKey(bytes(28))),
        (a_tracker(), "mac_address", MacAddress("C0:00:00:00:00:00")),
    ],
)
def test_with_changes_rejects_fields_that_cannot_be_updated(
    entity: Any, name: str, value: Any
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        entity.with_changes({name: value}, T0)
    assert fields_of(exc.value) == ["update_mask"]
    assert name in str(exc.value)


@pytest.mark.parametrize(
    ("entity", "changes", "field"),
    [
        (a_client(), {"display_name": ""}, "display_name"),
        (a_run(), {"end_time": T0 - timedelta(days=1)}, "end_time"),
        (a_run(), {"start_time": datetime(2025, 1, 1)}, "start_time"),
        (a_location(), {"radius_m": 0.0}, "radius_m"),
        (a_tracker(), {"display_name": "x" * 201}, "display_name"),
    ],
)
def test_with_changes_validates_the_result(
    entity: Any, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        entity.with_changes(changes, T0)
    assert fields_of(exc.value) == [field]


def test_tracker_moved_to_another_run_keeps_its_mac() -> None:
    tracker = a_tracker()
    moved = tracker.with_changes({"production_run_id": uuid.uuid4()}, T0)
    assert moved.mac_address == tracker.mac_address


# -- check_mac_matches / parse_id ------------------------------------------------------------


def test_check_mac_matches_accepts_empty_and_the_implied_mac_in_any_style() -> None:
    implied = MacAddress.for_advertisement_key(KEY).value
    check_mac_matches("", KEY)
    check_mac_matches(implied, KEY)
    check_mac_matches(implied.lower().replace(":", "-"), KEY)
    check_mac_matches(implied.replace(":", ""), KEY)


def test_check_mac_matches_rejects_another_mac_naming_both() -> None:
    implied = MacAddress.for_advertisement_key(KEY).value
    with pytest.raises(InvalidArgument) as exc:
        check_mac_matches("C0:00:00:00:00:01", KEY)
    assert fields_of(exc.value) == ["mac_address"]
    assert implied in str(exc.value)


def test_check_mac_matches_rejects_a_malformed_mac() -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_mac_matches("not a mac", KEY)
    assert fields_of(exc.value) == ["mac_address"]


def test_parse_id_round_trips_and_rejects_garbage() -> None:
    ident = uuid.uuid4()
    assert parse_id(str(ident)) == ident
    for bad, reason in [("", "required"), ("nope", "not a valid id")]:
        with pytest.raises(InvalidArgument) as exc:
            parse_id(bad, "brand_id")
        assert fields_of(exc.value) == ["brand_id"]
        assert reason in exc.value.violations[0].reason
