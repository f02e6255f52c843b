"""Which tokens an account loses in films and the mailer, by `iat` and `sid`, when it is
disabled or deleted or its password changes, or one of its sessions ends."""

from __future__ import annotations

from datetime import UTC, datetime

from common.events import SessionsEnded, UserEvent, UserEventType
from common.revocations import REPLAY_SECONDS, SESSION_MEMORY_SECONDS, Revocations

AT = datetime(2026, 11, 24, 12, 0, 0, 700_000, tzinfo=UTC)  # .7 into its second
SECOND = int(AT.timestamp())


def _claims(user: str, iat: int) -> dict[str, object]:
    return {"sub": user, "iat": iat}


def test_a_disabled_accounts_tokens_up_to_its_second_are_taken_back() -> None:
    revocations = Revocations()
    revocations.note(UserEvent(type=UserEventType.DISABLED, user_id="u1", occurred_at=AT))
    assert revocations.revoked(_claims("u1", SECOND - 600))
    assert revocations.revoked(_claims("u1", SECOND))  # nobody signs in once disabled
    assert not revocations.revoked(_claims("u1", SECOND + 1))  # after an enable
    assert not revocations.revoked(_claims("u2", SECOND - 600))  # someone else


def test_other_events_take_nothing_back_and_a_later_event_moves_the_line() -> None:
    revocations = Revocations()
    for kind in (UserEventType.ENABLED, UserEventType.VERIFIED, UserEventType.EMAIL_CHANGED):
        revocations.note(UserEvent(type=kind, user_id="u1", occurred_at=AT))
    assert not revocations.revoked(_claims("u1", SECOND - 600))
    revocations.note(UserEvent(type=UserEventType.DELETED, user_id="u1", occurred_at=AT))
    earlier = AT.replace(hour=11)
    revocations.note(UserEvent(type=UserEventType.DISABLED, user_id="u1", occurred_at=earlier))
    assert revocations.revoked(_claims("u1", SECOND))  # the later line holds


def test_entries_older_than_any_token_they_could_refuse_are_forgotten() -> None:
    now = AT.timestamp() + REPLAY_SECONDS + 10
    revocations = Revocations(clock=lambda: now)
    revocations.note(UserEvent(type=UserEventType.DISABLED, user_id="old", occurred_at=AT))
    recent = datetime.fromtimestamp(now - 60, UTC)
    for i in range(2047):
        revocations.note(
            UserEvent(type=UserEventType.DISABLED, user_id=f"u{i}", occurred_at=recent)
        )
    assert not revocations.revoked(_claims("old", SECOND - 600))
    assert revocations.revoked(_claims("u0", int(now) - 120))


def test_an_event_from_the_future_takes_back_no_later_token() -> None:
    """An `occurred_at` ahead of the clock (a foreign producer's, a skewed host's) would
    refuse every token the account got afterwards, for as long as that future lasted."""
    now = AT.timestamp()
    revocations = Revocations(clock=lambda: now)
    ahead = datetime.fromtimestamp(now + 86400, UTC)
    revocations.note(UserEvent(type=UserEventType.DISABLED, user_id="u1", occurred_at=ahead))
    assert revocations.revoked(_claims("u1", SECOND))
    assert not revocations.revoked(_claims("u1", SECOND + 1))


def test_a_password_change_keeps_the_session_that_made_it() -> None:
    revocations = Revocations(clock=lambda: AT.timestamp() + 60)
    change = UserEventType.PASSWORD_CHANGED
    revocations.note(UserEvent(type=change, user_id="u1", session_id="mine", occurred_at=AT))
    older = SECOND - 600
    assert revocations.revoked({"sub": "u1", "iat": older, "sid": "other"})
    assert not revocations.revoked({"sub": "u1", "iat": older, "sid": "mine"})
    assert not revocations.revoked({"sub": "u1", "iat": SECOND, "sid": "new"})  # its second
    reset = UserEvent(type=change, user_id="u1", occurred_at=AT.replace(minute=1))
    revocations.note(reset)  # a reset keeps no session
    assert revocations.revoked({"sub": "u1", "iat": SECOND, "sid": "mine"})


def test_an_ended_sessions_tokens_are_refused_for_an_hour() -> None:
    """A logout or "sign out everywhere else": that session's tokens, whatever their
    `iat`; the account's other sessions go on. Remembered past any default token's life,
    then forgotten (bounded memory)."""
    now = AT.timestamp()
    revocations = Revocations(clock=lambda: now)
    revocations.note_ended(SessionsEnded(user_id="u1", session_ids=["s1", "s2"], occurred_at=AT))
    assert revocations.revoked({"sub": "u1", "sid": "s1", "iat": SECOND + 5})
    assert revocations.revoked({"sub": "u1", "sid": "s2", "iat": SECOND - 600})
    assert not revocations.revoked({"sub": "u1", "sid": "s3", "iat": SECOND - 600})
    assert not revocations.revoked({"sub": "u1", "iat": SECOND - 600})  # no sid at all
    # An hour on, the next event forgets them; an event older than that is not kept.
    now += SESSION_MEMORY_SECONDS + 1
    long_ago = SessionsEnded(user_id="u2", session_ids=["old"], occurred_at=AT)
    revocations.note_ended(long_ago)
    recent = datetime.fromtimestamp(now, UTC)
    revocations.note_ended(SessionsEnded(user_id="u1", session_ids=["s4"], occurred_at=recent))
    assert not revocations.revoked({"sub": "u1", "sid": "s1", "iat": SECOND})
    assert not revocations.revoked({"sub": "u2", "sid": "old", "iat": SECOND})
    assert revocations.revoked({"sub": "u1", "sid": "s4", "iat": SECOND})
