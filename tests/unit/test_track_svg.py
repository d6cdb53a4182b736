"""The track picture (issue 17): valid SVG whose fences are circles of their true radius
in the picture's own scale, measured independently from the distance between two track
points (haversine) and their distance in the picture."""

from __future__ import annotations

import math
import re
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from domain.exports import ExportChange, ExportPoint, Fence
from domain.track_svg import fit, render

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
TRACKER = uuid.uuid4()


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def track() -> tuple[list[ExportPoint], list[ExportChange], list[Fence]]:
    # from a depot in Hamburg east and north to a customer, about 8 km
    pts = [
        ExportPoint(
            TRACKER,
            T0 + timedelta(minutes=10 * i),
            53.55 + 0.0006 * i,
            9.99 + 0.0011 * i,
            20,
            3,
            "findmy",
        )
        for i in range(101)
    ]
    changes = [
        ExportChange(
            TRACKER, pts[0].report_time, pts[0].latitude, pts[0].longitude, "IN_STORAGE", None
        ),
        ExportChange(
            TRACKER,
            pts[5].report_time,
            pts[5].latitude,
            pts[5].longitude,
            "IN_TRANSIT",
            "IN_STORAGE",
        ),
        ExportChange(
            TRACKER,
            pts[100].report_time,
            pts[100].latitude,
            pts[100].longitude,
            "DELIVERED",
            "IN_TRANSIT",
        ),
    ]
    fences = [
        Fence("Depot <A&B>", "STORAGE", 53.55, 9.99, 400.0),
        Fence("Customer", "DELIVERY", pts[100].latitude, pts[100].longitude, 250.0),
    ]
    return pts, changes, fences


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def test_the_picture_is_valid_svg_with_every_part() -> None:
    pts, changes, fences = track()
    root = parse(render("tracker x", pts, changes, fences))
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    assert {
        "fences",
        "track",
        "status-changes",
        "first",
        "last",
        "scale-bar",
        "north-arrow",
        "legend",
    } <= ids
    circles = root.findall(f".//{SVG}g[@id='fences']/{SVG}circle")
    assert [c.get("class") for c in circles] == ["fence storage", "fence delivery"]
    assert circles[0].get("stroke-dasharray")  # storage dashed, delivery not
    assert not circles[1].get("stroke-dasharray")
    assert circles[0].get("fill") != circles[1].get("fill")
    labels = [t.text for t in root.findall(f".//{SVG}g[@id='fences']/{SVG}text")]
    assert labels == ["Depot <A&B>", "Customer"]  # escaped in the text, intact when parsed
    segments = root.findall(f".//{SVG}g[@id='track']/{SVG}line")
    assert len(segments) == len(pts) - 1
    colours = [s.get("stroke") for s in segments]
    assert colours[0] != colours[-1]  # graded in time
    assert int(colours[0][1:3], 16) < int(colours[-1][1:3], 16)  # more red later
    marks = root.findall(f".//{SVG}g[@id='status-changes']/{SVG}path")
    assert len(marks) == 3
    legend = "".join(root.find(f".//{SVG}g[@id='legend']").itertext())
    for words in (
        "storage fence",
        "delivery fence",
        "first report",
        "last report",
        "became DELIVERED",
    ):
        assert words in legend


def test_a_fence_radius_is_its_true_radius_in_the_pictures_scale() -> None:
    pts, changes, fences = track()
    root = parse(render("tracker x", pts, changes, fences))
    segments = root.findall(f".//{SVG}g[@id='track']/{SVG}line")
    first, last = segments[0], segments[-1]
    x1, y1 = float(first.get("x1")), float(first.get("y1"))
    x2, y2 = float(last.get("x2")), float(last.get("y2"))
    pixels_per_metre = math.hypot(x2 - x1, y2 - y1) / haversine_m(
        (pts[0].latitude, pts[0].longitude), (pts[-1].latitude, pts[-1].longitude)
    )
    for circle, fence in zip(
        root.findall(f".//{SVG}g[@id='fences']/{SVG}circle"), fences, strict=True
    ):
        assert float(circle.get("r")) == pytest.approx(fence.radius_m * pixels_per_metre, rel=0.01)
    # the scale bar says what it measures
    bar = root.find(f".//{SVG}g[@id='scale-bar']")
    line = bar.find(f"{SVG}line")
    length_px = float(line.get("x2")) - float(line.get("x1"))
    metres = float(bar.get("data-metres"))
    assert length_px == pytest.approx(metres * pixels_per_metre, rel=0.01)
    label = bar.find(f"{SVG}text").text
    value, unit = re.fullmatch(r"([\d.]+) (k?m)", label).groups()
    assert float(value) * (1000 if unit == "km" else 1) == metres


def test_everything_drawn_lies_inside_the_picture() -> None:
    pts, _changes, fences = track()
    proj = fit([(p.latitude, p.longitude) for p in pts], fences)
    for f in fences:
        x, y = proj.xy(f.latitude, f.longitude)
        r = proj.scale * f.radius_m
        assert x - r >= 0
        assert x + r <= 960 - 220
        assert y - r >= 0
        assert y + r <= 720
    for p in pts:
        x, y = proj.xy(p.latitude, p.longitude)
        assert 0 <= x <= 960 - 220
        assert 0 <= y <= 720
    # north is up: a point further north is higher in the picture
    assert proj.xy(53.6, 10.0)[1] < proj.xy(53.5, 10.0)[1]


def test_fences_alone_or_one_point_still_draw() -> None:
    _, _, fences = track()
    parse(render("fences only", [], [], fences))
    one = [ExportPoint(TRACKER, T0, 1.0, 2.0, 5, 2, "findmy")]
    root = parse(render("one point", one, [], []))
    assert root.find(f".//{SVG}circle[@id='first']") is not None


def test_a_fence_name_with_control_characters_still_parses() -> None:
    pts, changes, _ = track()
    fences = [Fence("Dock\x01 7 <east>", "DELIVERY", 53.55, 9.99, 100.0)]
    root = parse(render("tracker \x02", pts, changes, fences))
    labels = [t.text for t in root.findall(f".//{SVG}g[@id='fences']/{SVG}text")]
    assert labels == ["Dock\ufffd 7 <east>"]
