"""The mailer's word on each email, read back into the outbox (the end-to-end ack).

An email's outbox row keeps its payload until the mailer reports the email finished on
`mail.delivery-status` (`sent` or `failed`): then the row is acknowledged and the payload,
with its plaintext code, blanked. `queued` and `retrying` say the email is alive and push
back its republication. Whatever the broker loses (a memory-only broker restarting, an
unclean leader election), the relay can therefore publish again; the mailer's dedupe by
`event_id` makes that safe, and it re-announces an email it had already finished, so a
lost report costs one more record, never a second email.

Statuses are read by every relay from all partitions (no consumer group: each auth
database must see every report) starting at the newest; a report missed while the relay
was away is made up for by that re-announcement.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth_service.models import OutboxEvent
from common.clock import utcnow
from common.events import DELIVERY_STATUS_TOPIC, DeliveryStatus, DeliveryStatusEvent
from common.kafka import KafkaSettings, close_quietly

log = logging.getLogger(__name__)

ACKS = Counter("auth_outbox_acks_total", "Mailer reports applied to the outbox", ["kind"])
FINISHED = {DeliveryStatus.SENT, DeliveryStatus.FAILED}
CHUNK = 500  # event ids per statement, under every database's bind-parameter limit


class AckReader:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], kafka: KafkaSettings) -> None:
        self._sessions = sessions
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None
        self._from_start = False

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            group_id=None,  # every partition, and nothing committed anywhere
            enable_auto_commit=False,
            auto_offset_reset="latest",
            metadata_max_age_ms=5_000,  # finds the topic soon after the mailer makes it
            fetch_max_wait_ms=200,
        )
        # By pattern: a subscription by name would have a restarted broker create the
        # topic the moment we ask for it, before its owner (the mailer) can.
        consumer.subscribe(pattern=f"^{re.escape(DELIVERY_STATUS_TOPIC)}$")
        await consumer.start()
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await close_quietly(consumer, "the delivery-status reader")

    def broker_reset(self) -> None:
        """The broker came back empty: the topic's next partitions are read from their
        start (everything in them is new), not from the end."""
        self._from_start = True

    async def poll(self) -> int:
        """Apply whatever reports arrived (waiting up to a second); how many were read."""
        assert self._consumer is not None
        if self._from_start and self._consumer.assignment():
            self._from_start = False
            await self._consumer.seek_to_beginning(*self._consumer.assignment())
        batch = await self._consumer.getmany(timeout_ms=1000, max_records=2000)
        records = [record for records in batch.values() for record in records]
        if records:
            await self.apply(records)
        return len(records)

    async def apply(self, records: Iterable[ConsumerRecord]) -> None:
        finished: set[str] = set()
        alive: set[str] = set()
        for record in records:
            try:
                status = DeliveryStatusEvent.model_validate_json(record.value)
            except ValidationError:
                continue  # not ours to judge; the mailer is the only writer
            (finished if status.status in FINISHED else alive).add(status.event_id)
        alive -= finished
        now = utcnow()
        async with self._sessions.begin() as session:
            for ids in _chunks(finished):
                await session.execute(
                    update(OutboxEvent)
                    .where(OutboxEvent.event_id.in_(ids), OutboxEvent.acked_at.is_(None))
                    .values(acked_at=now, payload=None)
                )
            for ids in _chunks(alive):
                await session.execute(
                    update(OutboxEvent)
                    .where(
                        OutboxEvent.event_id.in_(ids),
                        OutboxEvent.acked_at.is_(None),
                        OutboxEvent.sent_at.is_not(None),
                    )
                    .values(sent_at=now)
                )
        ACKS.labels("finished").inc(len(finished))
        ACKS.labels("alive").inc(len(alive))

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until `stopping`; a failing broker is waited out, not fatal."""
        while not stopping.is_set():
            try:
                await self.poll()
            except KafkaError as exc:
                log.warning("reading delivery statuses failed (%s); retrying", exc)
                await asyncio.sleep(1)
            except Exception:  # e.g. the database away: an ack reader that died would
                # leave every email to be republished; log it and keep reading.
                log.exception("applying delivery statuses failed; retrying")
                await asyncio.sleep(1)


def _chunks(ids: set[str]) -> Iterable[list[str]]:
    ordered = sorted(ids)
    for start in range(0, len(ordered), CHUNK):
        yield ordered[start : start + CHUNK]
