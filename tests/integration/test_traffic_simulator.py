"""The traffic simulator's scenario pushed through the real collector, travel times computed
by the worker's turn, read back through the query API and scored against the ground truth:
the robust estimate stays within 5 % of the truth (median over bins with >= 10 matches),
beats the plain mean of all matches, and follows a congestion onset within two bins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from simulator.traffic import RoadGraph, create_graph, messages, push, score, simulate
from tests.integration.conftest import ADMIN_EMAIL, Stack
from tests.integration.test_detectors import new_client, stubs
from tracker.v1 import detector_query_service_pb2 as dq
from usecases.travel_times import ComputeTravelTimes, TravelTimeSettings

pytestmark = pytest.mark.integration


async def test_estimates_follow_the_simulated_truth(stack: Stack) -> None:
    graph = RoadGraph.corridor(3).with_incident(share=0.5, onset_s=3600.0)
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    day_s = start.hour * 3600.0
    traffic = simulate(graph, hours=2.0, vehicles_per_link_hour=240, day_start_s=day_s)
    assert traffic.stops > 0
    client = await new_client(stack, "traffic")
    assert stack.collector_channel is not None
    token = await stack.token_for(ADMIN_EMAIL)
    ids = await create_graph(stack.collector_channel, token, client, graph)
    msgs = [m.SerializeToString() for m in messages(ids, traffic, start.timestamp())]
    _, stored = await push(stack.collector_channel, token, msgs, streams=2)
    assert stored == traffic.count

    assert stack.container is not None
    uow = await stack.container.uow_factory.async_()
    turn = ComputeTravelTimes(uow, stack.container.clock(), "test", TravelTimeSettings())
    assert (await turn()).destinations == len(graph.positions)

    _, q = stubs(stack)
    index = {(ids[x.destination], ids[x.source]): n for n, x in enumerate(graph.links)}
    estimates: dict[int, dict[int, tuple[float, float, int]]] = {}
    request = dq.ListTravelTimesRequest(page_size=1000)
    while True:
        page = await q.ListTravelTimes(request)
        for b in page.travel_times:
            link = index[(b.destination_detector_id, b.source_detector_id)]
            estimates.setdefault(link, {})[b.start_time.seconds] = (
                b.estimate_s,
                b.mean_s,
                b.used_count,
            )
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    result = score(graph, traffic.truth_bins(start.timestamp()), estimates, start.timestamp())
    assert result.bins >= 20
    assert result.median_error <= 0.05, result
    assert result.median_error < result.mean_median_error, result
    assert result.onset_lag_bins is not None
    assert result.onset_lag_bins <= 2, result


async def test_the_demo_feeds_its_detectors_with_history_and_then_live(stack: Stack) -> None:
    from domain.access import Principal
    from domain.pagination import PageRequest
    from servers.detector_demo import DetectorDemo

    assert stack.container is not None
    settings = stack.container.settings()
    demo = DetectorDemo(settings)
    await demo.start(stack.container)
    try:
        queries = await stack.container.detectors.queries.async_()
        events = await stack.container.detectors.events.async_()
        detectors = (await queries.list(Principal.system(), None, PageRequest(100))).items
        assert len(detectors) == 4
        for _ in range(100):
            page = await events.events(
                Principal.system(), [d.id for d in detectors], None, None, PageRequest(10)
            )
            if page.items:
                break
            await asyncio.sleep(0.2)
        assert page.items
    finally:
        await demo.stop()
    # A second start finds the same detectors.
    again = DetectorDemo(settings)
    await again.start(stack.container)
    await again.stop()
    assert len((await queries.list(Principal.system(), None, PageRequest(100))).items) == 4
