"""Delivery-status announcements on `mail.delivery-status`, keyed by recipient.

They are collected while a batch is worked and published together, one record batch per
partition (a `send()` per message cost 0.5 ms of CPU an email). They are announcements;
the delivery table is the record, so a failed publish is counted and logged and never
holds up mail.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import Counter

from common.clock import utcnow
from common.events import (
    DELIVERY_STATUS_TOPIC,
    DeliveryStatus,
    DeliveryStatusEvent,
    EmailCodeEvent,
)

log = logging.getLogger(__name__)

STATUS_LOST = Counter("mailer_status_publish_failures_total", "Status events not published")


class StatusAnnouncer:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._pending: list[tuple[bytes, bytes]] = []
        self._partitioner = DefaultPartitioner()

    def add(
        self,
        event: EmailCodeEvent,
        status: DeliveryStatus,
        attempt: int,
        reason: str | None = None,
    ) -> None:
        # Built without validation: every field comes from a validated event or is ours.
        # Every field given: for one left to its default_factory, pydantic inspects the
        # factory's signature on each call, which doubles the cost.
        value = DeliveryStatusEvent.model_construct(
            event_id=event.event_id,
            email=event.email,
            type=event.type.value,
            status=status,
            attempt=attempt,
            reason=reason,
            at=utcnow(),
        ).to_bytes()
        self._pending.append((event.key, value))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            partitions = sorted(await self._producer.partitions_for(DELIVERY_STATUS_TOPIC))
            by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
            hashed: dict[bytes, int] = {}  # an email's statuses share its key: hash it once
            for key, value in pending:  # Kafka's key hashing: one recipient, one partition
                partition = hashed.get(key)
                if partition is None:
                    partition = hashed[key] = self._partitioner(key, partitions, partitions)
                by_partition.setdefault(partition, []).append((key, value))
            sent = []
            for partition, records in by_partition.items():
                batch = self._producer.create_batch()
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:  # full
                        sent.append(await self._send(batch, partition))
                        batch = self._producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                sent.append(await self._send(batch, partition))
            await asyncio.gather(*sent)
        except (KafkaError, OSError) as exc:
            STATUS_LOST.inc(len(pending))
            log.warning("%d delivery-status event(s) not published: %s", len(pending), exc)

    async def _send(self, batch: BatchBuilder, partition: int) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send_batch(
            batch, DELIVERY_STATUS_TOPIC, partition=partition
        )
        return future
