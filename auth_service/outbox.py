"""The transactional outbox relay: publishes events written beside the codes they announce.

Rows are written in the same transaction as the code, so an accepted sign-up always has
its event on disk even while the broker is down; the relay publishes rows in id order
with acks=all and marks them sent only after the broker acknowledged them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.models import OutboxEvent
from common.events import (
    EMAIL_CODES_DLQ_TOPIC,
    EMAIL_CODES_TOPIC,
    REQUEST_ID_HEADER,
    EmailCodeEvent,
    utcnow,
)
from common.kafka import KafkaSettings, ensure_topics, make_producer
from common.logs import request_id

log = logging.getLogger(__name__)

BATCH = 200
MAX_BACKOFF = 10.0


CODES_ISSUED = Counter("auth_codes_issued_total", "One-time codes sent out", ["type"])


def add_event(session: AsyncSession, event: EmailCodeEvent) -> None:
    if event.code is not None:
        CODES_ISSUED.labels(event.type.value).inc()
    session.add(
        OutboxEvent(
            topic=EMAIL_CODES_TOPIC,
            key=event.email,
            payload=event.model_dump_json(),
            request_id=request_id.get(),
        )
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        kafka: KafkaSettings,
        poll_seconds: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._kafka = kafka
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.connected = False

    def notify(self) -> None:
        """Called after a transaction that added events commits: publish now, not at next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _connect(self) -> AIOKafkaProducer:
        backoff = 0.2
        while True:
            producer = make_producer(self._kafka)
            try:
                await ensure_topics(self._kafka, EMAIL_CODES_TOPIC, EMAIL_CODES_DLQ_TOPIC)
                await producer.start()
                return producer
            except (KafkaError, OSError) as exc:
                await producer.stop()
                log.warning("broker unreachable (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run(self) -> None:
        self._producer = await self._connect()
        self.connected = True
        backoff = 0.2
        while True:
            try:
                sent = await self.drain_once()
                backoff = 0.2
            except (KafkaError, OSError) as exc:
                self.connected = False
                log.warning("publishing the outbox failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self.connected = True
            if sent == BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()

    async def drain_once(self) -> int:
        """Publish up to one batch of pending rows in order; returns how many were sent."""
        assert self._producer is not None
        # Clear before reading: a notify() that lands while we publish triggers another pass.
        self._wake.clear()
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        OutboxEvent.id,
                        OutboxEvent.topic,
                        OutboxEvent.key,
                        OutboxEvent.payload,
                        OutboxEvent.request_id,
                    )
                    .where(OutboxEvent.sent_at.is_(None))
                    .order_by(OutboxEvent.id)
                    .limit(BATCH)
                )
            ).all()
        if not rows:
            return 0
        # Queue the whole batch, then await acks: the producer keeps per-partition order.
        futures = [
            await self._producer.send(
                topic,
                payload.encode(),
                key=key.encode(),
                headers=[(REQUEST_ID_HEADER, rid.encode())] if rid else None,
            )
            for _, topic, key, payload, rid in rows
        ]
        await asyncio.gather(*futures)
        async with self._sessions.begin() as session:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([row.id for row in rows]))
                .values(sent_at=utcnow(), payload=None)
            )
        log.info("published %d outbox event(s)", len(rows))
        return len(rows)
