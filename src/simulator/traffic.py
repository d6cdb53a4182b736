"""Traffic simulator (the seed's ``mbcli traffic``): a road graph of detectors and links,
vehicles whose true travel times change over the day, detectors that hear them imperfectly,
pushed through the real API, with the ground truth kept for scoring.

Model, per link source -> destination (free-flow time from the distance at 50 km/h, times
1.3 for the road's bends):
- true travel time at departure t = free-flow x congestion(t) x the driver (lognormal,
  sigma 5 %); congestion has a morning (08:00) and an evening (17:30) peak of a per-link
  height, and optionally an incident: from ``onset`` on, a few links take 60 % longer;
- vehicles depart as a Poisson process (busier at the peaks); after a link a vehicle goes on
  along a link out of its destination with probability 1/2;
- ``stop_share`` of the vehicles stop on the way for 2 to 15 minutes (a delivery, a
  coffee): their match is an outlier and not part of the truth;
- a detector hears a passing vehicle with probability ``p_detect`` (0.8); a pass heard
  gives 2 to 5 detections within a few seconds of the closest approach, RSSI strongest at
  it (with noise); some vehicles linger (waiting at lights: detections over 30-60 s);
- devices of passers-by are heard at one detector only (noise, never matched).
Truth per link and 5-minute bin (by arrival at the destination): the median true travel
time of the vehicles that arrived in it without stopping, whether heard or not.

Run: ``python -m simulator.traffic --help`` (or ``tracker-traffic``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc

from tracker.v1 import detector_pb2 as d
from tracker.v1 import detector_service_pb2 as ds
from tracker.v1 import detector_service_pb2_grpc as ds_grpc
from tracker.v1 import resources_pb2 as pb

SPEED_MPS = 13.9
BENDS = 1.3
EARTH_M = 6_371_008.8
BIN_S = 300


@dataclass(frozen=True, slots=True)
class LinkSpec:
    destination: int
    source: int
    free_s: float
    max_s: int
    peak: float  # congestion height at the peaks (0.3: 30 % longer)


@dataclass(slots=True)
class RoadGraph:
    positions: list[tuple[float, float]]
    links: list[LinkSpec]
    incident_links: frozenset[int] = frozenset()
    onset_s: float | None = None  # seconds since the start of the simulation

    @classmethod
    def random(
        cls, detectors: int, sources_per_destination: int, seed: int = 1, size_km: float = 8.0
    ) -> RoadGraph:
        """Detectors scattered over a square around Berlin; each destination takes its
        nearest detectors as sources."""
        rng = random.Random(seed)
        deg = size_km / 111.0
        positions = [
            (52.5 + rng.uniform(-deg / 2, deg / 2), 13.4 + rng.uniform(-deg, deg))
            for _ in range(detectors)
        ]
        links = []
        for dest, p in enumerate(positions):
            near = sorted(
                (distance_m(p, q), src) for src, q in enumerate(positions) if src != dest
            )[:sources_per_destination]
            for dist, src in near:
                free = max(60.0, dist * BENDS / SPEED_MPS)
                links.append(LinkSpec(dest, src, free, int(free * 4 + 300), rng.uniform(0.2, 0.8)))
        return cls(positions, links)

    @classmethod
    def corridor(cls, detectors: int = 4, spacing_m: float = 1500.0) -> RoadGraph:
        """Detectors along one road, linked both ways between neighbours."""
        positions = [(52.5 + i * spacing_m / 111_000.0, 13.4) for i in range(detectors)]
        links = []
        for i in range(detectors - 1):
            free = spacing_m * BENDS / SPEED_MPS
            for dest, src in ((i + 1, i), (i, i + 1)):
                links.append(LinkSpec(dest, src, free, int(free * 4 + 300), 0.5))
        return cls(positions, links)

    def with_incident(self, share: float, onset_s: float, seed: int = 2) -> RoadGraph:
        rng = random.Random(seed)
        n = max(1, int(len(self.links) * share))
        return RoadGraph(
            self.positions, self.links, frozenset(rng.sample(range(len(self.links)), n)), onset_s
        )

    def congestion(self, link: int, t_s: float, day_s: float) -> float:
        """How many times the free-flow time a departure at ``t_s`` takes (``day_s``: the
        time of day of the simulation's start)."""
        hour = ((day_s + t_s) / 3600.0) % 24
        bump = math.exp(-(((hour - 8.0) / 0.75) ** 2)) + 0.8 * math.exp(
            -(((hour - 17.5) / 1.0) ** 2)
        )
        factor = 1.0 + self.links[link].peak * bump
        if self.onset_s is not None and link in self.incident_links and t_s >= self.onset_s:
            factor *= 1.6
        return factor


def distance_m(p: tuple[float, float], q: tuple[float, float]) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*p, *q))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * EARTH_M * math.asin(math.sqrt(h))


@dataclass(slots=True)
class Traffic:
    """Sightings per detector (device, seconds since start, RSSI) and the truth."""

    sightings: dict[int, list[tuple[bytes, float, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # per link: (arrival seconds, true travel seconds) of vehicles that did not stop
    truth: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    traversals: int = 0
    stops: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.sightings.values())

    def truth_bins(self, start_epoch_s: float) -> dict[int, dict[int, float]]:
        """Per link and bin start (epoch seconds): the median true travel time."""
        out: dict[int, dict[int, float]] = {}
        for link, items in self.truth.items():
            bins: dict[int, list[float]] = defaultdict(list)
            for arrive, true_s in items:
                b = int((start_epoch_s + arrive) // BIN_S) * BIN_S
                bins[b].append(true_s)
            out[link] = {b: statistics.median(v) for b, v in bins.items()}
        return out


def simulate(
    graph: RoadGraph,
    hours: float,
    vehicles_per_link_hour: float,
    day_start_s: float = 6 * 3600.0,
    p_detect: float = 0.8,
    stop_share: float = 0.05,
    noise_share: float = 0.1,
    seed: int = 7,
) -> Traffic:
    rng = random.Random(seed)
    out = Traffic()
    end = hours * 3600.0
    outgoing: dict[int, list[int]] = defaultdict(list)
    for i, link in enumerate(graph.links):
        outgoing[link.source].append(i)

    def hear(detector: int, device: bytes, t: float) -> None:
        if rng.random() >= p_detect:
            return
        linger = rng.random() < 0.05
        span = rng.uniform(30, 60) if linger else rng.uniform(4, 10)
        for _ in range(rng.randint(2, 5)):
            off = rng.uniform(-span / 2, span / 2)
            rssi = int(-55 - 30 * abs(off) / span + rng.gauss(0, 3))
            if 0 <= t + off <= end:  # only what is heard within the simulated window
                out.sightings[detector].append((device, t + off, max(-127, min(20, rssi))))

    for first in range(len(graph.links)):
        t = 0.0
        while True:
            # Poisson departures, busier at the peaks (rate x congestion).
            rate = vehicles_per_link_hour / 3600.0 * graph.congestion(first, t, day_start_s)
            t += rng.expovariate(rate)
            if t >= end:
                break
            device = rng.getrandbits(48).to_bytes(6, "big")
            link, depart = first, t
            hear(graph.links[link].source, device, depart)
            while True:
                spec = graph.links[link]
                true = (
                    spec.free_s
                    * graph.congestion(link, depart, day_start_s)
                    * math.exp(rng.gauss(0, 0.05))
                )
                stop = rng.uniform(120, 900) if rng.random() < stop_share else 0.0
                arrive = depart + true + stop
                out.traversals += 1
                if stop:
                    out.stops += 1
                elif arrive <= end:
                    out.truth[link].append((arrive, true))
                hear(spec.destination, device, arrive)
                nxt = outgoing.get(spec.destination)
                if not nxt or rng.random() < 0.5 or arrive >= end:
                    break
                link, depart = rng.choice(nxt), arrive
    for det in range(len(graph.positions)):  # passers-by, heard once
        for _ in range(int(noise_share * len(out.sightings[det]))):
            device = rng.getrandbits(48).to_bytes(6, "big")
            out.sightings[det].append((device, rng.uniform(0, end), rng.randint(-95, -60)))
    return out


def messages(
    detector_ids: Sequence[str], traffic: Traffic, start_epoch_s: float, batch: int = 5000
) -> Iterator[ds.IngestSightingsRequest]:
    """The sightings as stream messages, one detector per message, ``batch`` at most."""
    for det, items in sorted(traffic.sightings.items()):
        for k in range(0, len(items), batch):
            msg = ds.IngestSightingsRequest(detector_id=detector_ids[det])
            add = msg.sightings.add
            for device, t, rssi in items[k : k + batch]:
                s = add(mac_address=device, rssi_dbm=rssi)
                when = start_epoch_s + t
                s.seen_time.seconds = int(when)
                s.seen_time.nanos = int((when % 1) * 1e9)
            yield msg


async def create_graph(
    channel: grpc.aio.Channel, token: str, client_id: str, graph: RoadGraph, tag: str = "sim"
) -> list[str]:
    """The graph's detectors and links through the API; the detectors' ids."""
    meta = (("authorization", f"Bearer {token}"),)
    stub = ds_grpc.DetectorServiceStub(channel)
    ids = []
    for n, (lat, lon) in enumerate(graph.positions):
        created = await stub.CreateDetector(
            ds.CreateDetectorRequest(
                detector=d.Detector(
                    client_id=client_id,
                    display_name=f"{tag}-{n}",
                    position=pb.GeoPoint(latitude=lat, longitude=lon),
                    radios=[d.RADIO_BLUETOOTH],
                    range_m=50,
                )
            ),
            metadata=meta,
        )
        ids.append(created.detector.id)
    for link in graph.links:
        await stub.CreateLink(
            ds.CreateLinkRequest(
                link=d.Link(
                    destination_detector_id=ids[link.destination],
                    source_detector_id=ids[link.source],
                    max_seconds=link.max_s,
                )
            ),
            metadata=meta,
        )
    return ids


async def push(
    channel: grpc.aio.Channel,
    token: str,
    msgs: Sequence[bytes],
    streams: int = 4,
    rate: float = 0.0,
    sizes: Sequence[int] | None = None,
) -> tuple[float, int]:
    """Send serialized messages over ``streams`` concurrent streams, at most ``rate``
    sightings per second (0: as fast as the server takes them); seconds and stored count."""
    call = channel.stream_unary(
        "/tracker.v1.DetectorService/IngestSightings",
        request_serializer=None,
        response_deserializer=ds.IngestSightingsResponse.FromString,
    )
    meta = (("authorization", f"Bearer {token}"),)
    t0 = time.perf_counter()
    sent = [0]

    async def one(part: list[int]) -> int:
        async def gen():  # type: ignore[no-untyped-def]
            for i in part:
                if rate > 0 and sizes is not None:
                    ahead = sent[0] / rate - (time.perf_counter() - t0)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                    sent[0] += sizes[i]
                yield msgs[i]

        resp = await call(gen(), metadata=meta)
        if resp.rejected_count:
            raise RuntimeError(f"rejected sightings: {list(resp.errors)[:3]}")
        return int(resp.stored_count)

    order = list(range(len(msgs)))
    stored = await asyncio.gather(*(one(order[k::streams]) for k in range(streams)))
    return time.perf_counter() - t0, sum(stored)


@dataclass(frozen=True, slots=True)
class Score:
    """Estimates against the truth, over bins with at least ``min_matches`` used matches."""

    bins: int
    median_error: float  # median |estimate - truth| / truth
    bias: float  # mean (estimate - truth) / truth
    mean_median_error: float  # the same for the plain mean of all matches
    mean_bias: float
    onset_lag_bins: float | None  # median bins after an incident's onset until within 10 %
    mean_onset_lag_bins: float | None


def score(
    graph: RoadGraph,
    truth: dict[int, dict[int, float]],
    estimates: dict[int, dict[int, tuple[float, float, int]]],
    start_epoch_s: float,
    min_matches: int = 10,
) -> Score:
    """``estimates``: per link and bin start, (estimate, plain mean, matches used)."""
    errors, bias, m_errors, m_bias = [], [], [], []
    for link, bins in estimates.items():
        for b, (est, mean, used) in bins.items():
            true = truth.get(link, {}).get(b)
            if true is None or used < min_matches:
                continue
            errors.append(abs(est - true) / true)
            bias.append((est - true) / true)
            m_errors.append(abs(mean - true) / true)
            m_bias.append((mean - true) / true)
    # Onset: the first bin whose true time is 30 % above the bin before the incident; the lag
    # is how many bins later the estimate is first within 10 % of the truth (0: at once).
    lags: list[list[float]] = [[], []]
    if graph.onset_s is not None:
        onset_bin = int((start_epoch_s + graph.onset_s) // BIN_S) * BIN_S
        for link in graph.incident_links:
            true_bins, bins = truth.get(link, {}), estimates.get(link, {})
            before = true_bins.get(onset_bin - BIN_S)
            if before is None:
                continue
            risen = [b for b in sorted(true_bins) if b >= onset_bin and true_bins[b] > 1.3 * before]
            if not risen:
                continue
            for which in (0, 1):
                lag = 12.0
                for k in range(12):
                    b = risen[0] + k * BIN_S
                    got, true = bins.get(b), true_bins.get(b)
                    if (
                        got is not None
                        and true is not None
                        and abs(got[which] - true) <= 0.1 * true
                    ):
                        lag = float(k)
                        break
                lags[which].append(lag)
    return Score(
        bins=len(errors),
        median_error=statistics.median(errors) if errors else math.nan,
        bias=statistics.fmean(bias) if bias else math.nan,
        mean_median_error=statistics.median(m_errors) if m_errors else math.nan,
        mean_bias=statistics.fmean(m_bias) if m_bias else math.nan,
        onset_lag_bins=statistics.median(lags[0]) if lags[0] else None,
        mean_onset_lag_bins=statistics.median(lags[1]) if lags[1] else None,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tracker-traffic",
        description="Simulate traffic past detectors and push it through the collector.",
    )
    p.add_argument("--collector", default="127.0.0.1:9000")
    p.add_argument("--token", default=os.environ.get("TRACKER_TOKEN", ""), help="bearer token")
    p.add_argument("--client-id", required=True, help="client the detectors belong to")
    p.add_argument("--detectors", type=int, default=6)
    p.add_argument("--sources-per-destination", type=int, default=2)
    p.add_argument("--hours", type=float, default=1.0, help="simulated hours")
    p.add_argument(
        "--ago-hours", type=float, default=None, help="start this long ago (default: --hours)"
    )
    p.add_argument("--vehicles-per-link-hour", type=float, default=120.0)
    p.add_argument("--rate", type=float, default=0.0, help="sightings/s pushed (0: max)")
    p.add_argument("--truth", default="", help="write the ground truth (JSON) here")
    p.add_argument("--seed", type=int, default=7)
    return p


async def _main(args: argparse.Namespace) -> list[dict[str, object]]:
    graph = RoadGraph.random(args.detectors, args.sources_per_destination, seed=args.seed)
    ago = args.hours if args.ago_hours is None else args.ago_hours
    start = datetime.now(UTC) - timedelta(hours=ago)
    day_s = (start - start.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    traffic = simulate(graph, args.hours, args.vehicles_per_link_hour, day_s, seed=args.seed)
    async with grpc.aio.insecure_channel(args.collector) as channel:
        ids = await create_graph(channel, args.token, args.client_id, graph)
        msgs = list(messages(ids, traffic, start.timestamp()))
        sizes = [len(m.sightings) for m in msgs]
        seconds, stored = await push(
            channel, args.token, [m.SerializeToString() for m in msgs], rate=args.rate, sizes=sizes
        )
    print(
        f"detectors {len(ids)}, links {len(graph.links)}, sightings {traffic.count}, "
        f"stored {stored} in {seconds:.1f} s ({traffic.count / seconds:,.0f}/s)"
    )
    truth = traffic.truth_bins(start.timestamp())
    return [
        {
            "destination_detector_id": ids[graph.links[i].destination],
            "source_detector_id": ids[graph.links[i].source],
            "bins": {str(b): v for b, v in sorted(bins.items())},
        }
        for i, bins in truth.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    truth = asyncio.run(_main(args))
    if args.truth:
        with open(args.truth, "w") as f:
            json.dump(truth, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
