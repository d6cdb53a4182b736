"""The outage rule: a cohort's silent share against its own baseline (or, new, its client's),
a jump of at least ``jump`` with at least ``min_silent`` silent trackers, and its end."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from domain.errors import InvalidArgument
from domain.outages import (
    Cohort,
    CohortShare,
    Dimension,
    Outage,
    OutageRule,
    age_bin,
    has_ended,
    jumps,
)

T0 = datetime(2026, 8, 1, tzinfo=UTC)
C = uuid.uuid4()
CLIENT = Cohort(C, Dimension.CLIENT, str(C))
AGE = Cohort(C, Dimension.FIRST_REPORT_AGE, "50-59")
RUN = Cohort(C, Dimension.PRODUCTION_RUN, "run")
RULE = OutageRule()


def test_age_bins_count_whole_days_since_the_first_report() -> None:
    assert age_bin(T0, T0 + timedelta(days=50, hours=12), 10) == "50-59"
    assert age_bin(T0, T0 + timedelta(days=49, hours=23), 10) == "40-49"
    assert age_bin(T0, T0 - timedelta(hours=1), 10) == "0-9"  # a clock ahead: age 0


def test_a_jump_over_the_baseline_with_enough_silent_trackers_is_an_outage() -> None:
    shares = [CohortShare(RUN, 20, 10), CohortShare(AGE, 8, 8), CohortShare(CLIENT, 48, 8)]
    found = jumps(shares, {RUN: 0.4, CLIENT: 0.0}, RULE)
    # the run rose by 0.1 only; the age bin is new and is held against the client's baseline
    assert [s.cohort for s in found] == [AGE]


def test_too_few_silent_or_no_baseline_at_all_is_not_judged() -> None:
    assert jumps([CohortShare(RUN, 4, 4)], {RUN: 0.0}, RULE) == []
    assert jumps([CohortShare(RUN, 10, 10)], {}, RULE) == []


def test_an_outage_ends_when_the_share_falls_back_below_half_the_jump() -> None:
    outage = Outage(cohort=AGE, trackers=8, silent=8, share=1.0, baseline=0.0, start_time=T0)
    assert not has_ended(outage, CohortShare(AGE, 8, 2), RULE)  # 0.25 >= 0.15
    assert has_ended(outage, CohortShare(AGE, 8, 1), RULE)  # 0.125 < 0.15
    assert has_ended(outage, None, RULE)


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"jump": 0.0}, "outage_jump"), ({"min_silent": 0}, "outage_min_silent")],
)
def test_a_bad_rule_names_its_setting(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        OutageRule(**kw)  # type: ignore[arg-type]
    assert err.value.violations[0].field == field
