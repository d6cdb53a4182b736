"""The updatable fields of each setup resource come from one list, the domain entity's
``UPDATABLE``: the gRPC edge reads exactly those from a message, and refuses the others."""

from __future__ import annotations

import pytest
from google.protobuf import field_mask_pb2

from adapters.grpc import convert as cv
from domain.errors import InvalidArgument
from tracker.v1 import resources_pb2 as pb

MESSAGES = {
    "client": pb.Client,
    "brand": pb.Brand,
    "production_run": pb.ProductionRun,
    "location": pb.Location,
    "tracker": pb.Tracker,
}


@pytest.mark.parametrize("resource", sorted(MESSAGES))
def test_every_updatable_field_is_in_the_message_and_has_a_reader(resource: str) -> None:
    msg = MESSAGES[resource]()
    fields = cv.updatable_fields(resource, msg)
    assert set(fields) == cv.ENTITIES[resource].UPDATABLE
    assert set(fields) <= set(cv.FIELD_READERS)


@pytest.mark.parametrize("resource", sorted(MESSAGES))
def test_a_field_outside_the_list_is_refused(resource: str) -> None:
    msg = MESSAGES[resource]()
    with pytest.raises(InvalidArgument) as err:
        cv.changes_from(resource, msg, field_mask_pb2.FieldMask(paths=["create_time"]))
    assert err.value.violations[0].field == "update_mask"
    assert ", ".join(sorted(cv.ENTITIES[resource].UPDATABLE)) in str(err.value)
