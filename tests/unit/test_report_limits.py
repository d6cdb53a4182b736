"""IngestReports against the fakes: the limits of one message (items, distinct months) are
refused whole before any work, and every time a report carries follows the time rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidArgument
from domain.instants import add_months
from domain.limits import MAX_REPORT_MONTHS_PER_MESSAGE, MAX_REPORTS_PER_MESSAGE
from usecases.reports import IngestReports

from .test_report_usecases import ADMIN, NOW, World, by_key, counts, make_world


@pytest.fixture
async def w() -> World:
    return await make_world()


def month(n: int) -> datetime:
    return add_months(datetime(2025, 5, 1, tzinfo=UTC), -n) + timedelta(days=3)


async def test_a_message_spread_over_too_many_months_is_refused_whole(w: World) -> None:
    """Issue 10's repro: 1,000 reports in 1,000 months; nothing is looked up or stored."""
    items = [
        by_key(w.ta, report_time=add_months(datetime(1940, 1, 1, tzinfo=UTC), n))
        for n in range(1000)
    ]
    with pytest.raises(InvalidArgument) as err:
        await w.ingest(ADMIN, items)
    assert err.value.violations[0].field == "reports"
    assert "span 1000 months" in err.value.violations[0].reason
    assert f"at most {MAX_REPORT_MONTHS_PER_MESSAGE}" in err.value.violations[0].reason
    assert w.stored() == {}


async def test_the_month_limit_counts_distinct_months(w: World) -> None:
    ok = [by_key(w.ta, report_time=month(n), lat=n) for n in range(MAX_REPORT_MONTHS_PER_MESSAGE)]
    ok += [by_key(w.ta, report_time=month(0) + timedelta(hours=1))]  # a month again
    assert counts(await w.ingest(ADMIN, ok)) == (len(ok), len(ok), 0, 0)
    one_more = [*ok, by_key(w.ta, report_time=month(MAX_REPORT_MONTHS_PER_MESSAGE))]
    with pytest.raises(InvalidArgument):
        await w.ingest(ADMIN, one_more)


async def test_too_many_reports_name_the_limit(w: World) -> None:
    items = [by_key(w.ta, 0)] * (MAX_REPORTS_PER_MESSAGE + 1)
    with pytest.raises(InvalidArgument, match=f"at most {MAX_REPORTS_PER_MESSAGE} per message"):
        await w.ingest(ADMIN, items)


@pytest.mark.parametrize(
    "when",
    [
        datetime.min.replace(tzinfo=UTC),
        datetime(2018, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime.max.replace(tzinfo=UTC),
        NOW + timedelta(minutes=6),
    ],
)
async def test_report_and_publication_times_out_of_range_are_rejected(
    w: World, when: datetime
) -> None:
    items = [by_key(w.ta, 0, report_time=when), by_key(w.ta, 1, published_time=when)]
    result = await w.ingest(ADMIN, items)
    assert [v.field for v in result.rejected] == [
        "reports[0].report_time",
        "reports[1].published_time",
    ]
    assert counts(result) == (2, 0, 0, 2)


async def test_the_clock_skew_is_configurable(w: World) -> None:
    strict = IngestReports(w.uow, w.clock, max_clock_skew=timedelta(0))
    ahead = by_key(w.ta, report_time=NOW + timedelta(seconds=1))
    assert counts(await strict(ADMIN, [ahead])) == (1, 0, 0, 1)
    assert counts(await strict(ADMIN, [by_key(w.ta, report_time=NOW)])) == (1, 1, 0, 0)
    with pytest.raises(InvalidArgument):
        IngestReports(w.uow, w.clock, max_clock_skew=timedelta(days=1))
