from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from common.clock import utcnow
from common.events import (
    EmailCodeEvent,
    EmailEventType,
    SessionsEnded,
    UserEvent,
    UserEventType,
)


def test_round_trip_matches_the_contract() -> None:
    event = EmailCodeEvent(
        type=EmailEventType.EMAIL_VERIFICATION,
        email="a@example.com",
        code="012345",
        expires_at=utcnow() + timedelta(minutes=10),
        locale="ru",
    )
    raw = json.loads(event.to_bytes())
    assert set(raw) == {
        "event_id",
        "type",
        "email",
        "code",
        "expires_at",
        "locale",
        "occurred_at",
    }
    assert raw["type"] == "email_verification"
    assert EmailCodeEvent.from_bytes(event.to_bytes()) == event
    assert event.key == b"a@example.com"


def test_the_code_stays_out_of_repr_and_str() -> None:
    event = EmailCodeEvent(type=EmailEventType.PASSWORD_RESET, email="a@example.com", code="987654")
    assert "987654" not in repr(event)
    assert "987654" not in str(event)
    assert "987654" not in f"{event}"


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ValidationError):
        EmailCodeEvent.from_bytes(b'{"type": "lottery_win", "email": "a@example.com"}')


def test_unknown_fields_are_tolerated_for_forward_compatibility() -> None:
    raw = b'{"type": "account_exists", "email": "a@example.com", "new_field": 1}'
    assert EmailCodeEvent.from_bytes(raw).code is None


def test_user_event_matches_the_contract() -> None:
    event = UserEvent(type=UserEventType.VERIFIED, user_id="0b7f1d2e-0000-4000-8000-000000000001")
    raw = json.loads(event.to_json())
    assert set(raw) == {"event_id", "type", "user_id", "occurred_at"}  # no email unless needed
    assert raw["type"] == "user.verified"
    assert event.key == b"0b7f1d2e-0000-4000-8000-000000000001"
    assert UserEvent.from_bytes(event.to_json().encode()) == event


def test_user_deleted_carries_the_address_for_the_mailer() -> None:
    event = UserEvent(type=UserEventType.DELETED, user_id="u1", email="a@example.com")
    assert json.loads(event.to_json())["email"] == "a@example.com"


def test_every_user_event_type_of_the_contract() -> None:
    assert {t.value for t in UserEventType} == {
        "user.signed_up",
        "user.verified",
        "user.password_changed",
        "user.email_changed",
        "user.disabled",
        "user.enabled",
        "user.deleted",
    }


@pytest.mark.parametrize("event", [UserEvent, SessionsEnded])
def test_a_time_without_a_zone_is_read_as_utc_not_as_the_hosts(
    event: type[UserEvent] | type[SessionsEnded],
) -> None:
    """Read as the consumer's local time, a revocation east of UTC would move back by hours
    and tokens issued in between would pass."""
    fields = {"type": "user.disabled", "user_id": "u1"} if event is UserEvent else {"user_id": "u1"}
    for stamp, expected in (
        ("2030-01-01T12:00:00", datetime(2030, 1, 1, 12, tzinfo=UTC)),
        ("2030-01-01T12:00:00+03:00", datetime(2030, 1, 1, 9, tzinfo=UTC)),
    ):
        raw = {**fields, "session_ids": ["s1"], "occurred_at": stamp}
        occurred = event.from_bytes(json.dumps(raw).encode()).occurred_at
        assert occurred == expected and occurred.utcoffset() == timedelta(0)
