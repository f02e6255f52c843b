"""Access tokens that auth has taken back, for the services that check tokens offline.

Films and the mailer verify an access token with auth's public key only, so on its own a
token would keep working there until it expired after its account was disabled or
deleted, or after a password change or reset ended its session. Every process of such a
service therefore reads `auth.user-events` from end to end, with no consumer group (each
process needs every event, not a share of them), and notes, per account, the second
before which its tokens no longer count:

- user.disabled, user.deleted: every token issued up to that second (nobody signs in to a
  disabled or deleted account, so a token of that second came before the event);
- user.password_changed: every token issued before that second, except those of the
  session that made the change (`session_id`), which stays signed in; after a reset no
  session stays. A token of the change's own second may be a sign-in with the new
  password, and stays valid.

It also reads `auth.session-events`: the sessions auth ended one by one (a logout, "sign
out everywhere else", a reused refresh token, two-step sign-in turned on), whose tokens
(claim `sid`) are refused from then on. An ended session is remembered for
SESSION_MEMORY_SECONDS, longer than an access token lives by default.

A process starting reads the events of the last REPLAY_SECONDS (by timestamp, or the
whole topic where the broker cannot look offsets up by time), so a token taken back before
it started is refused too; tokens living longer than that (AUTH_ACCESS_TOKEN_TTL_SECONDS
is 15 minutes by default) are covered for that long only. While the broker is away the
feed retries in the background and the service goes on serving: what was noted holds,
what happens meanwhile is learned when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from common.events import (
    SESSION_EVENTS_TOPIC,
    USER_EVENTS_TOPIC,
    SessionsEnded,
    UserEvent,
    UserEventType,
)
from common.kafka import (
    KafkaSettings,
    close_quietly,
    end_and_position,
    keep_running,
    until_connected,
)
from common.tasks import cancel_and_wait
from common.user_events import user_events_consumer

log = logging.getLogger(__name__)

REPLAY_SECONDS = 24 * 3600.0
# How long an ended session's tokens are refused: past any access token's life unless
# AUTH_ACCESS_TOKEN_TTL_SECONDS was raised above it. Bounds the memory a day of logouts
# would otherwise take.
SESSION_MEMORY_SECONDS = 3600.0
TOPICS = (USER_EVENTS_TOPIC, SESSION_EVENTS_TOPIC)
TAKING_BACK = {UserEventType.DISABLED, UserEventType.DELETED, UserEventType.PASSWORD_CHANGED}
RESET_CHECK_SECONDS = 5.0


class Revocations:
    """Per account, the `iat` below which its access tokens are refused, but for those of
    the one session a password change kept."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._not_before: dict[str, tuple[int, str | None]] = {}
        # Ended sessions, oldest first, with when they ended.
        self._ended: OrderedDict[str, float] = OrderedDict()

    def note_ended(self, event: SessionsEnded) -> None:
        now = self._clock()
        at = min(event.occurred_at.timestamp(), now)
        if at < now - SESSION_MEMORY_SECONDS:
            return
        for session_id in event.session_ids:
            self._ended[session_id] = at
            self._ended.move_to_end(session_id)
        while self._ended:
            session_id, ended_at = next(iter(self._ended.items()))
            if ended_at >= now - SESSION_MEMORY_SECONDS:
                break
            del self._ended[session_id]

    def note(self, event: UserEvent) -> None:
        if event.type not in TAKING_BACK:
            return
        # Never past now: an event from the future would refuse every later token.
        at = math.floor(min(event.occurred_at.timestamp(), self._clock()))
        if event.type == UserEventType.PASSWORD_CHANGED:
            # Tokens carry `iat` in whole seconds. A sign-in with the new password may
            # come in the change's own second: that second stays valid.
            line, kept = at, event.session_id
        else:  # nobody signs in to a disabled or deleted account: its second goes too
            line, kept = at + 1, None
        if line >= self._not_before.get(event.user_id, (0, None))[0]:
            self._not_before[event.user_id] = (line, kept)
        self._forget_old()

    def revoked(self, claims: dict[str, Any]) -> bool:
        if self._ended and str(claims.get("sid")) in self._ended:
            return True
        found = self._not_before.get(str(claims.get("sub")))
        if found is None:
            return False
        line, kept = found
        return int(claims.get("iat", 0)) < line and (kept is None or claims.get("sid") != kept)

    def _forget_old(self) -> None:
        """Entries older than any token they could refuse (bounded memory)."""
        if len(self._not_before) % 1024:
            return
        oldest = self._clock() - REPLAY_SECONDS
        for user_id in [u for u, (t, _) in self._not_before.items() if t < oldest]:
            del self._not_before[user_id]


class RevocationFeed:
    """Reads every partition of `auth.user-events` and `auth.session-events` into
    `revocations`, in the background.

    Subscribed by pattern, with no group: aiokafka then asks the broker for every topic
    (naming this one would have a broker that restarted empty create it before its owner,
    auth's relay, does), assigns all its partitions once it exists, and again when their
    number changes. A partition newly assigned is read from REPLAY_SECONDS back. A
    partition whose end falls behind our position was lost with a broker that restarted
    empty (which reports no error for it): it is read again from its start."""

    def __init__(self, kafka: KafkaSettings, revocations: Revocations) -> None:
        self._kafka = kafka
        self._revocations = revocations
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(
            keep_running(self._serve, "revocations", self._stopping), name="revocations"
        )

    async def stop(self) -> None:
        self._stopping.set()
        await cancel_and_wait(self._task)
        self._task = None

    async def _connect(self) -> AIOKafkaConsumer:
        # Every event, in every process.
        return await user_events_consumer(self._kafka, None, TOPICS)

    async def _serve(self) -> None:
        consumer = await until_connected(self._connect, "revocations", self._stopping)
        if consumer is None:
            return
        assigned: set[TopicPartition] = set()
        next_check = 0.0
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    self._note(records)
                now_assigned = set(consumer.assignment())
                if fresh := now_assigned - assigned:
                    await self._seek_back(consumer, sorted(fresh))
                assigned = now_assigned
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + RESET_CHECK_SECONDS
                    await self._reread_lost(consumer, assigned)
        finally:
            await close_quietly(consumer, "revocations")

    async def _seek_back(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None:
        now = time.time()
        # Ended sessions count for an hour: reading a day of them back would only be
        # thrown away.
        looks_back = {SESSION_EVENTS_TOPIC: SESSION_MEMORY_SECONDS}
        since = {
            tp: int((now - looks_back.get(tp.topic, REPLAY_SECONDS)) * 1000) for tp in partitions
        }
        try:
            ends = await consumer.end_offsets(partitions)
            found = await consumer.offsets_for_times(since)
        except KafkaError as exc:  # a broker that cannot look offsets up by time, say
            log.info("reading %s from their start (%s)", ", ".join(TOPICS), exc)
            await consumer.seek_to_beginning(*partitions)
            return
        for tp in partitions:
            at = found.get(tp)
            # Nothing that recent: from where the end was, not from a later end, which
            # would skip what came in meanwhile.
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        log.info("reading %s for taken-back tokens", ", ".join(TOPICS))

    async def _reread_lost(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            found = await end_and_position(consumer, tp)
            if found is not None and found[0] < found[1]:
                log.warning("%s lost its events (a broker reset?): reading it again", tp)
                await consumer.seek_to_beginning(tp)

    def _note(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        for record in records:
            try:
                if record.topic == SESSION_EVENTS_TOPIC:
                    self._revocations.note_ended(SessionsEnded.from_bytes(record.value))
                else:
                    self._revocations.note(UserEvent.from_bytes(record.value))
            except ValidationError:
                continue  # the user-events consumer logs these; nothing to take back here
