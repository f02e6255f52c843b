from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from common.events import EmailCodeEvent, EmailEventType, utcnow


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
