"""UpdateStatusRule's contract (issue 15): the dwell as a Duration beside the deprecated
seconds, and an update mask."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.integration.conftest import Stack
from tests.integration.test_isolation_matrix import make_world
from tracker.v1 import status_pb2 as st
from tracker.v1 import status_query_service_pb2 as sq
from tracker.v1 import status_query_service_pb2_grpc as sq_grpc
from tracker.v1 import status_service_pb2 as ss
from tracker.v1 import status_service_pb2_grpc as ss_grpc

pytestmark = pytest.mark.integration


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    [detail] = [d for d in status.details if d.Is(bad.DESCRIPTOR)]
    detail.Unpack(bad)
    return {v.field: v.description for v in bad.field_violations}


class Rules:
    def __init__(self, stack: Stack, run_id: str) -> None:
        assert stack.collector_channel is not None
        assert stack.query_channel is not None
        self.update_stub = ss_grpc.StatusServiceStub(stack.collector_channel)
        self.query_stub = sq_grpc.StatusQueryServiceStub(stack.query_channel)
        self.run_id = run_id

    async def update(self, paths: list[str] | None = None, **fields: object) -> st.StatusRule:
        request = ss.UpdateStatusRuleRequest(
            status_rule=st.StatusRule(production_run_id=self.run_id, **fields),  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=paths or []),
        )
        return (await self.update_stub.UpdateStatusRule(request)).status_rule

    async def get(self) -> st.StatusRule:
        request = sq.GetStatusRuleRequest(production_run_id=self.run_id)
        return (await self.query_stub.GetStatusRule(request)).status_rule

    async def refused(self, paths: list[str] | None = None, **fields: object) -> dict[str, str]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await self.update(paths, **fields)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        return violations(err.value)


def minutes(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=60 * n)


@pytest.fixture
async def rules(stack: Stack) -> Rules:
    world = await make_world(stack, "rules")
    return Rules(stack, world.ids["run"])


async def test_the_dwell_is_a_duration_and_responses_fill_both_fields(rules: Rules) -> None:
    got = await rules.update(min_consecutive_reports=2, min_dwell=minutes(10))
    assert (got.min_dwell.ToSeconds(), got.min_dwell_s) == (600, 600)
    stored = await rules.get()
    assert (stored.min_dwell.ToSeconds(), stored.min_dwell_s) == (600, 600)
    # the deprecated field alone is still accepted
    got = await rules.update(min_consecutive_reports=2, min_dwell_s=300)
    assert (got.min_dwell.ToSeconds(), got.min_dwell_s) == (300, 300)
    # both, alike: fine
    got = await rules.update(min_consecutive_reports=2, min_dwell_s=120, min_dwell=minutes(2))
    assert got.min_dwell_s == 120


async def test_two_different_dwells_or_a_fractional_one_are_refused(rules: Rules) -> None:
    both = await rules.refused(min_consecutive_reports=2, min_dwell_s=60, min_dwell=minutes(2))
    assert list(both) == ["status_rule.min_dwell"]
    assert "min_dwell_s" in both["status_rule.min_dwell"]
    half = duration_pb2.Duration(seconds=1, nanos=500_000_000)
    assert list(await rules.refused(min_consecutive_reports=2, min_dwell=half)) == [
        "status_rule.min_dwell"
    ]
    long = duration_pb2.Duration(seconds=8 * 86400)
    assert list(await rules.refused(min_consecutive_reports=2, min_dwell=long)) == [
        "status_rule.min_dwell"
    ]


async def test_a_mask_changes_only_its_fields(rules: Rules) -> None:
    consecutive = st.STATUS_RULE_KIND_CONSECUTIVE
    await rules.update(
        kind=consecutive, min_consecutive_reports=3, min_dwell=minutes(10), min_confidence=3
    )
    # the message's other fields (zero here) are not looked at
    got = await rules.update(["min_confidence"], min_confidence=1)
    assert (got.kind, got.min_consecutive_reports, got.min_dwell_s, got.min_confidence) == (
        consecutive,
        3,
        600,
        1,
    )
    assert await rules.get() == got
    got = await rules.update(["min_dwell", "require_accuracy_within_radius"], min_dwell=minutes(1),
                             require_accuracy_within_radius=True)  # fmt: skip
    assert (got.min_dwell_s, got.require_accuracy_within_radius, got.min_confidence) == (
        60,
        True,
        1,
    )
    # the result must still be a valid rule as a whole
    assert "status_rule.min_consecutive_reports" in await rules.refused(
        ["kind"], kind=st.STATUS_RULE_KIND_EVIDENCE
    )


async def test_an_unknown_mask_path_is_refused_by_name(rules: Rules) -> None:
    before = await rules.get()
    found = await rules.refused(["min_confidence", "production_run_id", "nope"], min_confidence=3)
    assert list(found) == ["update_mask"]
    assert "production_run_id, nope" in found["update_mask"]
    assert await rules.get() == before


async def test_without_a_mask_the_whole_rule_is_replaced(rules: Rules) -> None:
    await rules.update(min_consecutive_reports=3, min_dwell=minutes(10), min_confidence=3)
    got = await rules.update(min_consecutive_reports=2)
    # every unset field takes its default, as before masks existed
    assert (got.min_consecutive_reports, got.min_dwell_s, got.min_confidence) == (2, 0, 2)
    assert got.kind == st.STATUS_RULE_KIND_CONSECUTIVE
