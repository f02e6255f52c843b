"""Access tokens that auth has taken back, for the services that check tokens offline.

Films and the mailer verify an access token with auth's public key only, so on its own a
token would keep working there until it expired after its account was disabled or
deleted. Every process of such a service therefore reads `auth.user-events` from end to
end, with no consumer group (each process needs every event, not a share of them), and
notes, per account disabled or deleted, the second up to which its tokens no longer
count: every token issued up to that second (nobody signs in to a disabled or deleted
account, so a token of that second came before the event).

A password change is not taken back here: it ends the account's other sessions but keeps
the one that made it, and the event does not say which that is; the other sessions'
access tokens live out their minutes, as before.

A process starting reads the events of the last REPLAY_SECONDS (by timestamp, or the
whole topic where the broker cannot look offsets up by time), so a token taken back before
it started is refused too; tokens living longer than that (AUTH_ACCESS_TOKEN_TTL_SECONDS
is 15 minutes by default) are covered for that long only. While the broker is away the
feed retries in the background and the service goes on serving: what was noted holds,
what happens meanwhile is learned when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from common.events import USER_EVENTS_TOPIC, UserEvent, UserEventType
from common.kafka import KafkaSettings, close_quietly, keep_running, started, until_connected
from common.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REPLAY_SECONDS = 24 * 3600.0
TAKING_BACK = {UserEventType.DISABLED, UserEventType.DELETED}
TOPIC_WAIT_SECONDS = 1.0


class Revocations:
    """Per account, the `iat` below which its access tokens are refused."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._not_before: dict[str, int] = {}

    def note(self, event: UserEvent) -> None:
        if event.type not in TAKING_BACK:
            return
        # Tokens carry `iat` in whole seconds: the event's own second is taken back too.
        not_before = math.floor(event.occurred_at.timestamp()) + 1
        if not_before > self._not_before.get(event.user_id, 0):
            self._not_before[event.user_id] = not_before
        self._forget_old()

    def revoked(self, claims: dict[str, Any]) -> bool:
        not_before = self._not_before.get(str(claims.get("sub")))
        return not_before is not None and int(claims.get("iat", 0)) < not_before

    def _forget_old(self) -> None:
        """Entries older than any token they could refuse (bounded memory)."""
        if len(self._not_before) % 1024:
            return
        oldest = self._clock() - REPLAY_SECONDS
        for user_id in [u for u, t in self._not_before.items() if t < oldest]:
            del self._not_before[user_id]


class RevocationFeed:
    """Reads every partition of `auth.user-events` into `revocations`, in the background."""

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
        consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,  # every event, in every process
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a topic made again: read it from its start
            request_timeout_ms=self._kafka.request_timeout_ms,
        )
        return await started(consumer)

    async def _serve(self) -> None:
        consumer = await until_connected(self._connect, "revocations", self._stopping)
        if consumer is None:
            return
        try:
            partitions = await self._partitions(consumer)
            if partitions:
                consumer.assign(partitions)
                await self._seek_back(consumer, partitions)
                log.info("reading %s for taken-back tokens", USER_EVENTS_TOPIC)
            while partitions and not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    self._note(records)
        finally:
            await close_quietly(consumer, "revocations")

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """The topic's partitions once it exists. Listing every topic first: asking for
        this one by name would have a broker that restarted empty create it before its
        owner, auth's relay, does."""
        while not self._stopping.is_set():
            if USER_EVENTS_TOPIC in await consumer.topics():
                found = consumer.partitions_for_topic(USER_EVENTS_TOPIC) or set()
                return [TopicPartition(USER_EVENTS_TOPIC, p) for p in sorted(found)]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TOPIC_WAIT_SECONDS)
        return []

    async def _seek_back(
        self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
    ) -> None:
        since = int((time.time() - REPLAY_SECONDS) * 1000)
        try:
            found = await consumer.offsets_for_times(dict.fromkeys(partitions, since))
        except KafkaError as exc:  # a broker that cannot look offsets up by time
            log.info("no offsets by time (%s): reading %s from its start", exc, USER_EVENTS_TOPIC)
            await consumer.seek_to_beginning(*partitions)
            return
        for tp in partitions:
            at = found.get(tp)
            if at is None:  # nothing that recent: from the end on
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)

    def _note(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        for record in records:
            try:
                event = UserEvent.from_bytes(record.value)
            except ValidationError:
                continue  # the user-events consumer logs these; nothing to take back here
            self._revocations.note(event)
