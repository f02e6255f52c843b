"""Reacting to auth's user lifecycle events (`auth.user-events`), for any service.

Each service reads the topic as a consumer group of its own and commits a batch's offsets
only after its handler has finished with every event in it: a crash or a failing handler
replays events, never loses them, so handlers must be idempotent. A malformed event is
logged and skipped. While the broker is away the consumer keeps retrying in the
background; the service goes on serving without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from pydantic import ValidationError

from common.events import USER_EVENTS_TOPIC, UserEvent
from common.kafka import (
    Backoff,
    KafkaSettings,
    being_cancelled,
    close_quietly,
    keep_running,
    started,
    until_connected,
)

log = logging.getLogger(__name__)

Handler = Callable[[UserEvent], Awaitable[None]]

# A topic created after we subscribed (auth had not run yet) is found this quickly.
METADATA_MAX_AGE_MS = 5_000


async def user_events_consumer(
    kafka: KafkaSettings, group_id: str | None, topics: tuple[str, ...] = (USER_EVENTS_TOPIC,)
) -> AIOKafkaConsumer:
    """A started consumer of `auth.user-events` (or of `topics`), from its start where it
    has no offsets; in `group_id`, or with none for every partition in every process. By
    pattern: naming a topic would have a broker that restarted empty create it before its
    owner, auth's relay, does; until it exists the consumer simply waits for it."""
    consumer = AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=METADATA_MAX_AGE_MS,
        request_timeout_ms=kafka.request_timeout_ms,
    )
    consumer.subscribe(pattern=f"^(?:{'|'.join(re.escape(topic) for topic in topics)})$")
    return await started(consumer)


class UserEventsConsumer:
    def __init__(self, kafka: KafkaSettings, group_id: str, handler: Handler) -> None:
        self._kafka = kafka
        self._group_id = group_id
        self._handler = handler
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"user-events-{self._group_id}")

    async def stop(self) -> None:
        """Finish the event in hand (its batch is replayed later if uncommitted), then leave."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, 10)
        except TimeoutError:
            log.warning("user events consumer %s did not stop in time", self._group_id)
        except asyncio.CancelledError:
            if being_cancelled():
                raise
        self._task = None

    async def _connect(self) -> AIOKafkaConsumer:
        return await user_events_consumer(self._kafka, self._group_id)

    async def _run(self) -> None:
        await keep_running(self._serve, f"user-events:{self._group_id}", self._stopping)

    async def _serve(self) -> None:
        """Connect, consume until stopping, leave; an unexpected error (a commit that the
        broker's absence fails, say) ends it after leaving, and keep_running starts it
        again: the uncommitted events are replayed."""
        what = f"user events ({self._group_id})"
        consumer = await until_connected(self._connect, what, self._stopping)
        if consumer is None:
            return
        self.running = True
        log.info("consuming %s as group %r", USER_EVENTS_TOPIC, self._group_id)
        backoff = Backoff()
        try:
            while not self._stopping.is_set():
                batch = await consumer.getmany(timeout_ms=500)
                if not batch:
                    continue
                try:
                    await self._handle(batch)
                except Exception:
                    # Nothing is lost: the batch is read again, and handlers are idempotent.
                    log.exception("handling user events failed; retrying in %.1fs", backoff.delay)
                    await backoff.wait(self._stopping)
                    for tp, records in batch.items():
                        with contextlib.suppress(IllegalStateError):  # no longer ours
                            consumer.seek(tp, records[0].offset)
                    continue
                backoff.reset()
                try:
                    await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
                except (CommitFailedError, IllegalStateError) as exc:
                    # A rebalance moved a partition: its new owner replays these events.
                    log.warning("commit refused after a rebalance: %s", exc)
        finally:
            self.running = False
            await close_quietly(consumer, what)

    async def _handle(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        for records in batch.values():
            for record in records:
                try:
                    event = UserEvent.from_bytes(record.value)
                except ValidationError as exc:
                    log.warning(
                        "skipping an unreadable user event at %s-%d@%d: %d error(s)",
                        record.topic,
                        record.partition,
                        record.offset,
                        exc.error_count(),
                    )
                    continue
                await self._handler(event)
