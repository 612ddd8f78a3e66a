"""The one consumer layer: every Kafka consumer of the platform is a :class:`Consumer` with one of three shapes.

- **per record** (:func:`per_record`): records of one partition one after another, partitions side by side; the
  idempotent shape (:func:`idempotent`) records the event id in the same transaction as the effect (credits,
  webhooks), the render worker claims jobs.
- **batch** (:func:`batched`): a whole fetch in one call (telemetry's one transaction per batch); a batch that fails
  for a reason of its own is split, so the bad record is isolated and the others are stored.
- **broadcast** (``group=None``): every partition, no group, positions kept in memory (the gateway's cache
  invalidation); a fresh reader starts at the end, one whose broker lost its data starts over from the beginning.

Promises, the same for every shape:
- An offset is committed only after its record's effect committed (or the record was dead-lettered): a crash in
  between redelivers it, and consumers dedupe by event id.
- Transient failures (database, broker, storage or a platform service away; ``shared.faults``) pause the partition
  and retry without limit; they never dead-letter anything.
- Any other failure is retried for ``budget_seconds`` (``CONSUMER_RETRY_BUDGET_SECONDS``), then the record goes to
  the group's dead-letter topic with its key, headers and value plus the group, source position, error and attempt
  count, and the partition moves on. A record that can never work (:class:`PoisonRecord`) goes there at once.
- One reconnect loop with backoff for every shape; a broker that comes back as a new cluster (it lost its data)
  restarts the consumer from the new broker's state instead of positions that no longer mean anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy import Column, DateTime, MetaData, Table, Text, delete, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import unit_of_work
from shared.events.envelope import CloudEvent
from shared.events.topics import dead_letter_topic
from shared.faults import PoisonRecord, is_transient
from shared.kafka import cluster_id, ensure_topics, start_producer, stop_producer
from shared.retry import Backoff, until_done
from shared.settings import ServiceSettings

log = structlog.stdlib.get_logger(__name__)
T = TypeVar("T")

# How long a fetch may wait for data on the broker: short, so an event is handled as soon as it lands (a broker
# that does not answer early, like the embedded one, would otherwise add up to 500 ms to every event).
FETCH_MAX_WAIT_MS = 50
CLOSE_SECONDS = 3.0
"""Longest wait for a consumer to close (leave its group); a broker that is gone never answers."""
STOP_SECONDS = 6.0
"""Longest wait, after the work in hand, for the loop to notice a stop and close its consumer."""
DLQ_HEADER_PREFIX = "x-dlq-"

EVENTS_CONSUMED = Counter("plugin_events_consumed_total", "Events consumed", ["group", "type", "outcome"])
DEAD_LETTERED = Counter("plugin_dead_lettered_total", "Records sent to a dead-letter topic", ["group", "topic"])
CONSUMER_RETRIES = Counter("plugin_consumer_retries_total", "Failed tries of a record", ["group", "kind"])


# --- retrying one record ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    budget_seconds: float = 30.0
    """How long a record failing for a reason of its own is retried before it is dead-lettered."""
    first_delay: float = 0.2
    max_delay: float = 5.0


class Interrupted(Exception):
    """The consumer is stopping: the record in hand is left uncommitted (it is redelivered)."""


# --- dead letters -----------------------------------------------------------------------------------------------


class DeadLetters:
    """Publishes records a group gave up on to its dead-letter topic, unchanged plus ``x-dlq-*`` headers."""

    def __init__(self, bootstrap: str, group: str, client_id: str, create_topic_partitions: int | None) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = dead_letter_topic(group)
        self.client_id = client_id
        self.create_topic_partitions = create_topic_partitions
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        """Until the broker takes it (a dead letter is never dropped); cancellation passes through."""
        headers = [(k, v) for k, v in record.headers if not k.startswith(DLQ_HEADER_PREFIX)]
        headers += [
            (f"{DLQ_HEADER_PREFIX}group", self.group.encode()),
            (f"{DLQ_HEADER_PREFIX}topic", record.topic.encode()),
            (f"{DLQ_HEADER_PREFIX}partition", str(record.partition).encode()),
            (f"{DLQ_HEADER_PREFIX}offset", str(record.offset).encode()),
            (f"{DLQ_HEADER_PREFIX}error", f"{type(error).__name__}: {error}"[:1000].encode(errors="replace")),
            (f"{DLQ_HEADER_PREFIX}attempts", str(attempts).encode()),
            (f"{DLQ_HEADER_PREFIX}time", datetime.now(UTC).isoformat().encode()),
        ]

        async def send() -> None:
            try:
                producer = await self._ready()
                await producer.send_and_wait(self.topic, value=record.value, key=record.key, headers=headers)
            except Exception:
                await self.close()  # a fresh producer for the next try
                raise

        await until_done(send, event="dead_letter_publish_retry")

    async def _ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            if self.create_topic_partitions:
                await ensure_topics(self.bootstrap, self.create_topic_partitions, topics=[self.topic])
            self._producer = await start_producer(self.bootstrap, client_id=f"{self.client_id}-dlq")
        return self._producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        await stop_producer(producer)


# --- shapes -----------------------------------------------------------------------------------------------------

RecordHandler = Callable[[ConsumerRecord], Awaitable[object]]
BatchHandler = Callable[[Sequence[ConsumerRecord]], Awaitable[object]]


@dataclass(frozen=True)
class Shape:
    """How a consumer hands records to its code: one at a time (``one``) or a whole fetch (``many``)."""

    one: RecordHandler | None = None
    many: BatchHandler | None = None


def per_record(handle: RecordHandler) -> Shape:
    return Shape(one=handle)


def batched(handle: BatchHandler) -> Shape:
    return Shape(many=handle)


# --- the consumer -----------------------------------------------------------------------------------------------


class BrokerReset(Exception):
    """The broker answers as a new cluster: what this consumer knew of offsets is void."""


class _StartOverAfterReset(ConsumerRebalanceListener):
    """A group member's first partitions after the broker lost its data are read from the beginning: offsets the
    group committed on the new broker meanwhile (from positions of the old one) must not skip what was replayed."""

    def __init__(self, owner: Consumer, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        if self.owner.from_beginning and assigned:
            await self.consumer.seek_to_beginning(*assigned)
            self.owner.from_beginning = False
            log.warning("consumer_reading_from_the_beginning", consumer=self.owner.name, partitions=len(assigned))


class Consumer:
    """One consumer group (or broadcast reader) on ``topics``, run as a task: ``start``, then ``stop``."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Sequence[str],
        group: str | None,
        name: str,
        shape: Shape,
        policy: RetryPolicy | None = None,
        max_records: int = 500,
        parallel_partitions: int = 64,
        max_poll_interval_ms: int = 300_000,
        cluster_check_seconds: float = 5.0,
        create_topic_partitions: int | None = None,
    ) -> None:
        """``name`` labels logs and metrics and names the dead-letter topic (the group, or the reader's name)."""
        self.bootstrap = bootstrap
        self.topics = list(topics)
        self.group = group
        self.name = name
        self.shape = shape
        self.policy = policy or RetryPolicy()
        self.max_records = max_records
        self.parallel_partitions = parallel_partitions
        self.max_poll_interval_ms = max_poll_interval_ms
        self.cluster_check_seconds = cluster_check_seconds
        self.dead_letters = DeadLetters(bootstrap, name, name, create_topic_partitions)
        self.ready = asyncio.Event()
        self._positions: dict[TopicPartition, int] = {}
        self.from_beginning = False
        self._cluster: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_hand: set[asyncio.Task[Any]] = set()
        self._checked = time.monotonic()

    # lifecycle ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"consumer-{self.name}")

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop fetching; the work in hand gets ``grace_seconds`` to finish and commit, then it is cancelled
        (uncommitted records are redelivered to whoever takes the partitions)."""
        self._stopping.set()
        in_hand = [task for task in self._in_hand if not task.done()]
        if in_hand:
            if grace_seconds > 0:
                await asyncio.wait(in_hand, timeout=grace_seconds)
            for work in in_hand:
                work.cancel()  # only the work: the loop then closes its consumer, which leaves the group at once
        loop = self._task
        if loop is not None:
            # The loop notices the stop within a fetch (≤ 0.5 s); cancelling it mid-close would skip LeaveGroup and
            # hold the group's next rebalance until the coordinator gives up on this member.
            done, _ = await asyncio.wait({loop}, timeout=STOP_SECONDS)
            if not done:
                loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Interrupted):
                await loop
        await self.dead_letters.close()

    async def run(self) -> None:
        """Connect, consume, and reconnect with backoff whenever the broker goes away; until cancelled."""
        backoff = Backoff(0.5, 10.0)
        while not self._stopping.is_set():
            consumer = self._new_consumer()
            try:
                await consumer.start()
                await self._check_cluster(consumer)
                if self.group is None:
                    await self._assign(consumer)
                self.ready.set()
                backoff.reset()
                log.info("consumer_started", consumer=self.name, topics=self.topics)
                await self._consume(consumer)
            except asyncio.CancelledError:
                raise
            except BrokerReset:
                log.warning("consumer_broker_reset", consumer=self.name)
            except Exception as exc:
                log.warning("consumer_retry", consumer=self.name, error=f"{type(exc).__name__}: {exc}")
                await backoff.sleep()
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), CLOSE_SECONDS)

    def _new_consumer(self) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            client_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            max_poll_interval_ms=self.max_poll_interval_ms,
        )
        if self.group is not None:
            consumer.subscribe(self.topics, listener=_StartOverAfterReset(self, consumer))
        return consumer

    async def _check_cluster(self, consumer: AIOKafkaConsumer) -> None:
        current = await cluster_id(consumer._client)
        if self._cluster is not None and current != self._cluster:
            log.warning("broker_lost_its_data", consumer=self.name, previous=self._cluster, current=current)
            self._positions.clear()
            self.from_beginning = True
            self._cluster = current
            raise BrokerReset(current)
        self._cluster = current

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Broadcast: every partition; where this reader was, else the end (fresh) or the start (broker reset)."""
        await consumer.topics()
        assigned: list[TopicPartition] = []
        for topic in self.topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise RuntimeError(f"topic {topic} has no partitions yet")
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        fresh = [tp for tp in assigned if tp not in self._positions]
        if fresh and self.from_beginning:
            await consumer.seek_to_beginning(*fresh)
        elif fresh:
            await consumer.seek_to_end(*fresh)
        for tp in assigned:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            else:  # where it starts is where it resumes after a reconnect, records or not
                self._positions[tp] = await consumer.position(tp)
        self.from_beginning = False

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        if self.shape.many is not None:
            await self._consume_batches(consumer, self.shape.many)
        else:
            await self._consume_partitions(consumer)

    def _cluster_check_due(self) -> bool:
        if time.monotonic() - self._checked > self.cluster_check_seconds:
            self._checked = time.monotonic()
            return True
        return False

    async def _consume_batches(self, consumer: AIOKafkaConsumer, handle: BatchHandler) -> None:
        """Batch shape: one fetch at a time, handled whole (or split to isolate a bad record), then committed."""
        while not self._stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=500, max_records=self.max_records)
            if self._stopping.is_set():
                return  # fetched but not handled: redelivered to whoever takes the partitions
            if self._cluster_check_due():
                await self._check_cluster(consumer)  # before handling: never commit old positions on a new broker
            if not fetched:
                continue
            work = asyncio.create_task(self._handle_batch(handle, fetched))
            self._in_hand.add(work)
            try:
                done = await work
            except Interrupted:
                return  # stopping while the database is away: the batch is redelivered
            finally:
                self._in_hand.discard(work)
            await self._commit(consumer, done)

    async def _consume_partitions(self, consumer: AIOKafkaConsumer) -> None:
        """Per-record shape: each partition's records in a task of their own, the partition paused meanwhile, so a
        record that waits (a poison record within its budget, a slow effect) holds only its own partition; the
        others go on being fetched and handled. At most ``parallel_partitions`` partitions in hand at once."""
        running: dict[TopicPartition, asyncio.Task[int | None]] = {}
        fetch: asyncio.Task[dict[TopicPartition, list[ConsumerRecord]]] | None = None
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if fetch is None and len(running) < self.parallel_partitions:
                    fetch = asyncio.create_task(consumer.getmany(timeout_ms=500, max_records=self.max_records))
                waiting = {stopping, *running.values(), *([fetch] if fetch is not None else [])}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for tp, task in [(tp, task) for tp, task in running.items() if task.done()]:
                    del running[tp]
                    await self._finish_partition(consumer, tp, task)
                if fetch is None or not fetch.done() or self._stopping.is_set():
                    continue
                fetched, fetch = fetch.result(), None
                if self._cluster_check_due():
                    await self._check_cluster(consumer)  # before handling: never commit old positions on a new broker
                for tp, records in fetched.items():
                    consumer.pause(tp)
                    if tp in running:  # assigned to us again while its earlier records are still in hand
                        consumer.seek(tp, records[0].offset)
                        continue
                    task = asyncio.create_task(self._handle_partition(records))
                    running[tp] = task
                    self._in_hand.add(task)
                    task.add_done_callback(self._in_hand.discard)
        except BaseException:
            for task in running.values():
                task.cancel()  # uncommitted: redelivered to whoever takes the partitions
            raise
        finally:
            stopping.cancel()
            if fetch is not None:
                fetch.cancel()
                with contextlib.suppress(BaseException):
                    await fetch
            if running:  # stopping: they finish within the grace ``stop`` gives them, or ``stop`` cancels them
                await asyncio.wait(running.values())
                for tp, task in running.items():
                    with contextlib.suppress(Exception):
                        await self._finish_partition(consumer, tp, task)

    async def _finish_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, task: asyncio.Task[int | None]
    ) -> None:
        """Commit what a partition's task handled and let the partition be fetched again."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, Interrupted):
            raise error
        offset = task.result() if error is None else None
        if offset is not None:
            await self._commit(consumer, {tp: offset})
        if tp in consumer.assignment() and not self._stopping.is_set():
            consumer.resume(tp)

    # handling -------------------------------------------------------------------------------------------------------

    async def _handle_partition(self, records: list[ConsumerRecord]) -> int | None:
        """One partition's records in order; the next offset to commit (None when none was handled)."""
        assert self.shape.one is not None
        handle = self.shape.one
        committed: int | None = None
        for record in records:
            if self._stopping.is_set():
                break
            await self._with_budget(record, functools.partial(handle, record))
            committed = record.offset + 1
        return committed

    async def _handle_batch(
        self, handle: BatchHandler, fetched: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, int]:
        records = [r for partition in fetched.values() for r in partition]
        backoff = Backoff(self.policy.first_delay, self.policy.max_delay)
        while True:
            try:
                await handle(records)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    # The batch's own fault: one record at a time, so only the bad one is retried and set aside.
                    log.warning("batch_failed_isolating", consumer=self.name, error=f"{type(exc).__name__}: {exc}")
                    for record in records:
                        await self._with_budget(record, functools.partial(handle, [record]))
                    break
                CONSUMER_RETRIES.labels(self.name, "transient").inc()
                log.warning("batch_waiting_for_infrastructure", consumer=self.name, error=type(exc).__name__)
                if self._stopping.is_set():
                    raise Interrupted from exc
                await backoff.sleep()
        return {tp: partition[-1].offset + 1 for tp, partition in fetched.items()}

    async def _with_budget(self, record: ConsumerRecord, attempt: Callable[[], Awaitable[object]]) -> None:
        """Run ``attempt`` until it succeeds; transient failures wait without limit, others get the budget."""
        backoff = Backoff(self.policy.first_delay, self.policy.max_delay)
        failures = 0
        first_failure: float | None = None
        while True:
            try:
                await attempt()
                self._remember(record)
                return
            except asyncio.CancelledError:
                raise
            except PoisonRecord as exc:
                await self._dead_letter(record, exc, failures + 1)
                return
            except Exception as exc:
                if is_transient(exc):
                    CONSUMER_RETRIES.labels(self.name, "transient").inc()
                    log.warning("record_waiting_for_infrastructure", consumer=self.name, error=type(exc).__name__)
                else:
                    failures += 1
                    first_failure = first_failure or time.monotonic()
                    CONSUMER_RETRIES.labels(self.name, "failure").inc()
                    if time.monotonic() - first_failure >= self.policy.budget_seconds:
                        await self._dead_letter(record, exc, failures)
                        return
                    log.warning("record_failed_retrying", **self._about(record, exc), attempt=failures)
                if self._stopping.is_set():
                    raise Interrupted from exc
                await backoff.sleep()

    def _remember(self, record: ConsumerRecord) -> None:
        self._positions[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def _dead_letter(self, record: ConsumerRecord, error: BaseException, attempts: int) -> None:
        await self.dead_letters.publish(record, error, attempts)
        self._remember(record)
        DEAD_LETTERED.labels(self.name, record.topic).inc()
        log.error(
            "record_dead_lettered",
            **self._about(record, error),
            dead_letter_topic=self.dead_letters.topic,
            attempts=attempts,
        )

    def _about(self, record: ConsumerRecord, error: BaseException) -> dict[str, object]:
        """Log fields naming a record and what went wrong with it."""
        return {
            "consumer": self.name,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "error": f"{type(error).__name__}: {error}"[:500],
        }

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if self.group is None or not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The partitions moved to another member meanwhile: it gets the records again and dedupes them.
            log.info("consumer_commit_skipped", consumer=self.name, error=type(exc).__name__)


def consumer_for(
    settings: ServiceSettings,
    *,
    topics: Sequence[str],
    group: str | None,
    shape: Shape,
    name: str | None = None,
    **options: int,
) -> Consumer:
    """A :class:`Consumer` configured from the process's settings (broker, retry budget, topic creation)."""
    name = name or group
    assert name, "a broadcast reader needs a name (it names its dead-letter topic)"
    return Consumer(
        bootstrap=settings.kafka_bootstrap_servers,
        topics=topics,
        group=group,
        name=name,
        shape=shape,
        policy=RetryPolicy(budget_seconds=settings.consumer_retry_budget_seconds),
        cluster_check_seconds=settings.kafka_cluster_check_seconds,
        create_topic_partitions=settings.kafka_partitions if settings.kafka_create_topics else None,
        **options,
    )


# --- idempotent effects -----------------------------------------------------------------------------------------


def processed_events_table(metadata: MetaData) -> Table:
    return Table(
        "processed_events",
        metadata,
        Column("event_id", Text, primary_key=True),
        Column("event_type", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def claim_event(session: AsyncSession, table: Table, event: CloudEvent) -> bool:
    """Record ``event`` as processed in the caller's transaction; False when it already was."""
    stmt = (
        pg_insert(table)
        .values(event_id=event.id, event_type=event.type)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(table.c.event_id)
    )
    return (await session.execute(stmt)).first() is not None


async def forget_processed(session: AsyncSession, table: Table, older_than_seconds: float) -> int:
    """Retention of processed-event ids (keep them longer than any redelivery or replay can come)."""
    cutoff = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds)
    result = await session.execute(delete(table).where(table.c.processed_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)


async def handle_once(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    event: CloudEvent,
    effect: Callable[[AsyncSession, CloudEvent], Awaitable[T]],
    *,
    group: str,
) -> T | None:
    """Run ``effect`` once per event id; returns None (and does nothing) for a duplicate."""
    async with unit_of_work(sessions) as session:
        if not await claim_event(session, table, event):
            EVENTS_CONSUMED.labels(group, event.type, "duplicate").inc()
            log.info("event_duplicate_skipped")
            return None
        result = await effect(session, event)
    EVENTS_CONSUMED.labels(group, event.type, "processed").inc()
    return result


Effect = Callable[[AsyncSession, CloudEvent], Awaitable[object]]
P = TypeVar("P", bound=BaseModel)


def with_payload(model: type[P], effect: Callable[[AsyncSession, CloudEvent, P], Awaitable[object]]) -> Effect:
    """An effect that receives the event's data parsed as ``model``; a payload that does not parse is a poison
    record (redelivering cannot fix it): dead-lettered at once."""

    async def run(session: AsyncSession, event: CloudEvent) -> object:
        try:
            payload = model.model_validate(event.data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise PoisonRecord(f"payload of {event.type} does not parse: {errors}") from None
        return await effect(session, event, payload)

    return run


def parse_event(record: ConsumerRecord) -> CloudEvent:
    """The record as a CloudEvent, bound to the log context; a record that is not one is a poison record."""
    try:
        event = CloudEvent.from_kafka(list(record.headers), record.value or b"")
    except ValueError as exc:
        raise PoisonRecord(f"not a CloudEvent: {exc}") from None
    structlog.contextvars.bind_contextvars(event_id=event.id, event_type=event.type)
    if request_id := event.extensions.get("requestid"):
        structlog.contextvars.bind_contextvars(request_id=request_id)
    return event


def idempotent(
    sessions: async_sessionmaker[AsyncSession],
    table: Table,
    effect: Effect,
    *,
    group: str,
    event_types: frozenset[str] | None = None,
) -> Shape:
    """Per record, once per event id: types not in ``event_types`` are acknowledged and skipped (a consumer
    ignores what it does not know)."""

    async def handle(record: ConsumerRecord) -> None:
        structlog.contextvars.clear_contextvars()
        event = parse_event(record)
        if event_types is not None and event.type not in event_types:
            EVENTS_CONSUMED.labels(group, event.type, "ignored").inc()
            return
        await handle_once(sessions, table, event, effect, group=group)

    return per_record(handle)
