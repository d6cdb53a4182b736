"""A tracker's track drawn with its run's geofences as an SVG picture, no map tiles (issue
17): a local equirectangular projection (metres east and north of the centre of the box,
the east axis scaled by the cosine of its latitude), fitted to the bounding box of the track
and the fences. Fences are circles of their true radius (STORAGE blue and dashed, DELIVERY
green), labelled; the track a polyline whose segments grade from blue (first) to red
(last); the first and last reports and each status change marked; a scale bar, a north
arrow and a legend. Pure: text in, text out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from domain.exports import ExportChange, ExportPoint, Fence, timestamp
from domain.exports import xml_text as escape

EARTH_RADIUS_M = 6_371_008.8
WIDTH, HEIGHT, MARGIN, LEGEND_W = 960, 720, 40, 220
STYLE = {
    "STORAGE": ('fill="#1f77b4" fill-opacity="0.12" stroke="#1f77b4"', 'stroke-dasharray="6 4"'),
    "DELIVERY": ('fill="#2ca02c" fill-opacity="0.12" stroke="#2ca02c"', ""),
}
STATUS_COLOURS = {"IN_STORAGE": "#1f77b4", "IN_TRANSIT": "#ff7f0e", "DELIVERED": "#2ca02c"}


@dataclass(frozen=True, slots=True)
class Projection:
    """Latitude/longitude to picture coordinates: ``x = x0 + s * east_m``,
    ``y = y0 - s * north_m`` (``s`` pixels per metre)."""

    lat0: float
    lon0: float
    scale: float  # pixels per metre
    x0: float
    y0: float

    def metres(self, lat: float, lon: float) -> tuple[float, float]:
        east = math.radians(lon - self.lon0) * EARTH_RADIUS_M * math.cos(math.radians(self.lat0))
        north = math.radians(lat - self.lat0) * EARTH_RADIUS_M
        return east, north

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        east, north = self.metres(lat, lon)
        return self.x0 + self.scale * east, self.y0 - self.scale * north


def fit(
    points: Sequence[tuple[float, float]],
    fences: Sequence[Fence],
    width: float = WIDTH - LEGEND_W,
    height: float = HEIGHT,
    margin: float = MARGIN,
) -> Projection:
    """The projection fitting the points (lat, lon) and the fences' circles into the box."""
    lats = [p[0] for p in points] + [f.latitude for f in fences]
    lons = [p[1] for p in points] + [f.longitude for f in fences]
    if not lats:
        raise ValueError("nothing to draw")
    lat0, lon0 = (min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2
    unit = Projection(lat0, lon0, 1.0, 0.0, 0.0)
    xs, ys = [], []
    for lat, lon in points:
        e, n = unit.metres(lat, lon)
        xs.append(e)
        ys.append(n)
    for f in fences:
        e, n = unit.metres(f.latitude, f.longitude)
        xs += [e - f.radius_m, e + f.radius_m]
        ys += [n - f.radius_m, n + f.radius_m]
    span_x, span_y = max(max(xs) - min(xs), 1.0), max(max(ys) - min(ys), 1.0)
    scale = min((width - 2 * margin) / span_x, (height - 2 * margin) / span_y)
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    return Projection(lat0, lon0, scale, width / 2 - scale * cx, height / 2 + scale * cy)


def _grade(i: int, n: int) -> str:
    """Blue (first) to red (last)."""
    t = i / max(n - 1, 1)
    red, green, blue = round(40 + 200 * t), round(60 * (1 - abs(2 * t - 1))), round(240 - 200 * t)
    return f"#{red:02x}{green:02x}{blue:02x}"


def _scale_bar_m(scale: float, target_px: float = 150.0) -> float:
    """A round length (1, 2 or 5 x 10^n metres) about ``target_px`` long."""
    metres = target_px / scale
    exp = 10 ** math.floor(math.log10(metres))
    return float(max((m * exp for m in (1, 2, 5) if m * exp <= metres), default=exp))


def _length(m: float) -> str:
    return f"{m / 1000:g} km" if m >= 1000 else f"{m:g} m"


def _f(v: float) -> str:
    return f"{v:.2f}"


def render(
    title: str,
    points: Sequence[ExportPoint],
    changes: Sequence[ExportChange],
    fences: Sequence[Fence],
) -> str:
    """The picture as SVG text (points and changes in time order)."""
    proj = fit([(p.latitude, p.longitude) for p in points], fences)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12" '
        f'data-pixels-per-metre="{proj.scale:.9g}">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fbfbf8"/>',
    ]
    out.append('<g id="fences">')
    for f in fences:
        x, y = proj.xy(f.latitude, f.longitude)
        fill, dash = STYLE.get(f.kind, STYLE["STORAGE"])
        label = f"{f.name} ({f.kind.lower()}, {_length(f.radius_m)})"
        out.append(
            f'<circle class="fence {f.kind.lower()}" cx="{_f(x)}" cy="{_f(y)}" '
            f'r="{proj.scale * f.radius_m:.4f}" data-radius-m="{f.radius_m:g}" {fill} {dash}>'
            f"<title>{escape(label)}</title></circle>"
            f'<text x="{_f(x)}" y="{_f(y - proj.scale * f.radius_m - 4)}" text-anchor="middle" '
            f'fill="#333">{escape(f.name)}</text>'
        )
    out.append("</g>")
    xy = [proj.xy(p.latitude, p.longitude) for p in points]
    out.append('<g id="track" fill="none" stroke-width="2.5" stroke-linecap="round">')
    for i in range(1, len(xy)):
        (x1, y1), (x2, y2) = xy[i - 1], xy[i]
        out.append(
            f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
            f'stroke="{_grade(i - 1, len(xy) - 1)}"/>'
        )
    out.append("</g>")
    out.append('<g id="points">')
    for (x, y), p in zip(xy, points, strict=True):
        out.append(
            f'<circle class="report" cx="{_f(x)}" cy="{_f(y)}" r="1.5" fill="#555">'
            f"<title>{timestamp(p.report_time)}</title></circle>"
        )
    out.append("</g>")
    out.append('<g id="status-changes">')
    for c in changes:
        x, y = proj.xy(c.latitude, c.longitude)
        colour = STATUS_COLOURS.get(c.status, "#777")
        out.append(
            f'<path class="status-change" d="M {_f(x)} {_f(y - 7)} L {_f(x + 7)} {_f(y)} '
            f'L {_f(x)} {_f(y + 7)} L {_f(x - 7)} {_f(y)} Z" fill="{colour}" stroke="#000">'
            f"<title>{escape(f'{timestamp(c.report_time)}: {c.status}')}</title></path>"
            f'<text x="{_f(x + 9)}" y="{_f(y + 4)}" fill="{colour}">{escape(c.status)}</text>'
        )
    out.append("</g>")
    if points:
        (fx, fy), (lx, ly) = xy[0], xy[-1]
        out.append(
            f'<g id="ends"><circle id="first" cx="{_f(fx)}" cy="{_f(fy)}" r="6" fill="#2ca02c" '
            f'stroke="#000"><title>first {timestamp(points[0].report_time)}</title></circle>'
            f'<rect id="last" x="{_f(lx - 6)}" y="{_f(ly - 6)}" width="12" height="12" '
            f'fill="#d62728" stroke="#000"><title>last {timestamp(points[-1].report_time)}'
            "</title></rect></g>"
        )
    bar_m = _scale_bar_m(proj.scale)
    bar_px = bar_m * proj.scale
    y = HEIGHT - 20
    out.append(
        f'<g id="scale-bar" data-metres="{bar_m:g}"><line x1="{MARGIN}" y1="{y}" '
        f'x2="{_f(MARGIN + bar_px)}" y2="{y}" stroke="#000" stroke-width="3"/>'
        f'<text x="{MARGIN}" y="{y - 6}">{_length(bar_m)}</text></g>'
    )
    nx = WIDTH - LEGEND_W - 30
    out.append(
        f'<g id="north-arrow"><path d="M {nx} 20 L {nx + 8} 44 L {nx} 38 L {nx - 8} 44 Z" '
        f'fill="#000"/><text x="{nx}" y="58" text-anchor="middle">N</text></g>'
    )
    out.append(_legend(points))
    out.append("</svg>\n")
    return "\n".join(out)


def _legend(points: Sequence[ExportPoint]) -> str:
    x = WIDTH - LEGEND_W + 10
    rows = [
        f'<rect x="{x - 6}" y="14" width="{LEGEND_W - 12}" height="230" fill="#fff" '
        'stroke="#999"/>',
        f'<text x="{x}" y="34" font-weight="bold">Legend</text>',
        f'<circle cx="{x + 8}" cy="54" r="7" {STYLE["STORAGE"][0]} {STYLE["STORAGE"][1]}/>'
        f'<text x="{x + 22}" y="58">storage fence</text>',
        f'<circle cx="{x + 8}" cy="78" r="7" {STYLE["DELIVERY"][0]}/>'
        f'<text x="{x + 22}" y="82">delivery fence</text>',
        f'<line x1="{x}" y1="102" x2="{x + 8}" y2="102" stroke="{_grade(0, 2)}" '
        f'stroke-width="3"/><line x1="{x + 8}" y1="102" x2="{x + 16}" y2="102" '
        f'stroke="{_grade(2, 2)}" stroke-width="3"/>'
        f'<text x="{x + 22}" y="106">track, blue (early) to red (late)</text>',
        f'<circle cx="{x + 8}" cy="126" r="6" fill="#2ca02c" stroke="#000"/>'
        f'<text x="{x + 22}" y="130">first report</text>',
        f'<rect x="{x + 2}" y="144" width="12" height="12" fill="#d62728" stroke="#000"/>'
        f'<text x="{x + 22}" y="154">last report</text>',
    ]
    y = 178
    for status, colour in STATUS_COLOURS.items():
        rows.append(
            f'<path d="M {x + 8} {y - 7} L {x + 15} {y} L {x + 8} {y + 7} L {x + 1} {y} Z" '
            f'fill="{colour}" stroke="#000"/><text x="{x + 22}" y="{y + 4}">'
            f"became {status}</text>"
        )
        y += 20
    if points:
        span = (
            f"{timestamp(points[0].report_time)[:16]} .. {timestamp(points[-1].report_time)[:16]}"
        )
        rows.append(f'<text x="{x}" y="{HEIGHT - 20}" font-size="10">{escape(span)}</text>')
    return '<g id="legend">' + "".join(rows) + "</g>"


__all__ = ["Projection", "fit", "render"]
