"""One turn of the webhook deliverer over in-memory ports: a 2xx is delivered, a failure is
scheduled again after the policy's backoff, the last failure is dead, a secret that no longer
opens is dead with its reason, and every request carries a signature of its exact body."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from domain.events import (
    SIGNATURE_HEADER,
    DeliveryPolicy,
    DueDelivery,
    Event,
    EventKind,
    verify_signature,
)
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.keys import FakeSealer
from usecases.events import DeliverWebhooks, _context

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SECRET = b"unit-test-secret-0001"


class Repo:
    def __init__(self, due: list[tuple[DueDelivery, str, bytes]]) -> None:
        self.due = due
        self.outcomes: dict[int, tuple[str, object]] = {}

    async def claim(self, limit: int, lease: timedelta, now: datetime):  # type: ignore[no-untyped-def]
        out, self.due = self.due[:limit], self.due[limit:]
        return out

    async def delivered(
        self, webhook_id: uuid.UUID, event_id: int, status: int, now: datetime
    ) -> None:
        self.outcomes[event_id] = ("delivered", status)

    async def failed(  # type: ignore[no-untyped-def]
        self, webhook_id, event_id, status, error, next_attempt, now
    ) -> None:
        self.outcomes[event_id] = ("dead" if next_attempt is None else "retry", next_attempt)


class Sender:
    def __init__(self, answers: dict[int, int | None]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
        self.sent.append((url, body, headers))
        status = self.answers[json.loads(body)["id"]]
        return status, "" if status == 200 else "no"


def due(
    event_id: int, attempts: int, sealer: FakeSealer, hook: uuid.UUID
) -> tuple[DueDelivery, str, bytes]:
    sealed = sealer.seal(SECRET, _context(hook))
    event = Event(event_id, uuid.uuid4(), EventKind.OUTAGE_OPENED, NOW, NOW, {"x": 1})
    return (
        DueDelivery(hook, "https://example.com/h", b"", event, attempts),
        sealed.kek_id,
        sealed.ciphertext,
    )


async def test_one_turn_records_each_outcome() -> None:
    sealer, hook = FakeSealer(), uuid.uuid4()
    wrong = FakeSealer(key=b"another-kek")
    moved = due(5, 0, wrong, hook)  # sealed under a KEK this sealer does not hold
    repo = Repo([due(1, 0, sealer, hook), due(2, 0, sealer, hook), due(3, 2, sealer, hook), moved])
    sender = Sender({1: 200, 2: 500, 3: None})
    policy = DeliveryPolicy(max_attempts=3, base=timedelta(seconds=10))
    turn = await DeliverWebhooks(repo, sender, sealer, FakeClock(NOW), policy)()
    assert (turn.claimed, turn.delivered, turn.failed, turn.dead, turn.unopenable) == (
        4,
        1,
        1,
        1,
        1,
    )
    assert repo.outcomes[1] == ("delivered", 200)
    kind, when = repo.outcomes[2]
    assert kind == "retry"
    assert NOW + timedelta(seconds=5) <= when <= NOW + timedelta(seconds=15)  # type: ignore[operator]
    assert repo.outcomes[3] == ("dead", None)  # its third failure
    assert repo.outcomes[5] == ("dead", None)
    assert len(sender.sent) == 3  # nothing is sent unsigned
    for _, body, headers in sender.sent:
        assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, int(NOW.timestamp()))
        assert headers["Tracker-Event-Id"] == str(json.loads(body)["id"])
