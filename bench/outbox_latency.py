"""Outbox commit -> event on Kafka, end to end, with the real relay (``shared.outbox.OutboxRelay``).

Starts embedded PostgreSQL and the Tansu broker (``shared.engines``, the ones ``make run`` uses; PostgreSQL with
``fsync=on`` as in dev unless ``CI`` is set), creates a database, applies the renders migrations (its ``outbox``
table and the NOTIFY trigger), creates a 12-partition topic, and runs one ``OutboxRelay`` on the ``renders`` schema
with the product's defaults (batch 500, poll 1 s) in a child process of its own, like a service's relay.

The bench process then commits outbox rows one transaction each (a realistic ``render.created`` CloudEvent, a
distinct key per row so rows spread over partitions) and a consumer assigned to every partition records when each
event arrives. Two figures per event:

- ``commit_to_consumed``: consumer arrival minus the writer's commit return (both clocks of this process); the
  consumer polls with ``fetch_max_wait_ms`` = ``--fetch-wait-ms`` so it adds little;
- ``relay_ack_lag``: exactly what the relay observes into ``plugin_outbox_publish_lag_seconds`` (row
  ``created_at`` = the writer's transaction start -> Kafka ack), captured per row by wrapping the histogram.

Modes: ``steady`` (``--rate`` commits/s, open loop, for ``--duration`` s) and ``burst`` (``--burst`` rows committed
as fast as ``--burst-writers`` connections can). Each mode runs against the relay as it is and, unless
``--no-compare-fix``, against ``WakeBeforePublishRelay``: the same class with one change to ``run`` (the wake-up
event is cleared *before* a publish pass instead of after it, so a NOTIFY that arrives while a batch is being
published is not lost); this is a proposal to compare, not product code.

Goal: p99 <= 50 ms. Writes ``bench/results/outbox_latency.json``.

Run: ``.venv/bin/python -m bench.outbox_latency [--rate 200] [--duration 10] [--burst 2000]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import typer
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.loadgen import ms, percentile, run_metadata, write_json
from bench.stack import RESULTS_DIR
from shared import outbox
from shared.engines import EmbeddedKafka, EmbeddedPostgres, free_port
from shared.events.envelope import CloudEvent
from shared.kafka import ensure_topics
from shared.outbox import OutboxRelay, log
from shared.settings import ServiceSettings

RESULTS_FILE = RESULTS_DIR / "outbox_latency.json"
SCHEMA = "renders"
TOPIC = "bench.outbox"
PARTITIONS = 12
DATABASE = "outbox_bench"
GOAL_P99_MS = 50.0
INSERT_SQL = "INSERT INTO renders.outbox (event_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4::jsonb, $5)"


# --- the relay, in a child process ------------------------------------------------------------------------------


def relay_defaults() -> dict[str, Any]:
    fields = ServiceSettings.model_fields
    return {"batch_size": fields["outbox_batch_size"].default, "poll_seconds": fields["outbox_poll_seconds"].default}


class _LagRecorder:
    """Stands in for ``OUTBOX_LAG``: forwards to the real histogram and keeps every observed value."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.samples: list[float] = []

    def labels(self, *values: str) -> _LagRecorder._Child:
        return _LagRecorder._Child(self, self.real.labels(*values))

    class _Child:
        def __init__(self, recorder: _LagRecorder, real: Any) -> None:
            self.recorder = recorder
            self.real = real

        def observe(self, value: float) -> None:
            self.recorder.samples.append(value)
            self.real.observe(value)


def relay_child(conn: multiprocessing.connection.Connection, options: dict[str, Any]) -> None:
    """Child process: run one relay until told to stop; answer ``collect`` with the lags and batch sizes so far."""
    uvloop.run(_relay_main(conn, options))


async def _relay_main(conn: multiprocessing.connection.Connection, options: dict[str, Any]) -> None:
    recorder = _LagRecorder(outbox.OUTBOX_LAG)
    outbox.OUTBOX_LAG = recorder  # type: ignore[assignment]
    relay_class: type[OutboxRelay] = WakeBeforePublishRelay if options["patched"] else OutboxRelay
    relay = relay_class(
        database_url=options["database_url"],
        schema=SCHEMA,
        bootstrap_servers=options["bootstrap"],
        batch_size=options["batch_size"],
        poll_seconds=options["poll_seconds"],
    )
    batches: list[int] = []
    publish = relay.publish_batch

    async def counted() -> int:
        sent = await publish()
        if sent:
            batches.append(sent)
        return sent

    relay.publish_batch = counted  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    requests: asyncio.Queue[str] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                command = conn.recv()
            except EOFError:
                command = "stop"
            loop.call_soon_threadsafe(requests.put_nowait, command)
            if command == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    await relay.start()
    conn.send("started")
    while True:
        command = await requests.get()
        conn.send({"lags": recorder.samples, "batches": batches})
        recorder.samples, batches[:] = [], []
        if command == "stop":
            break
    await relay.stop()


class WakeBeforePublishRelay(OutboxRelay):
    """``OutboxRelay.run`` with ``self._wake.clear()`` moved before the publish pass (a proposal to compare)."""

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._ensure_connected()
                self._wake.clear()  # a NOTIFY during the pass below sets it again: no wait after the pass
                while await self.publish_batch() >= self.batch_size:
                    pass
                backoff = 0.1
                await self._maybe_cleanup()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_retry", schema=self.schema, error=str(exc), retry_in=round(backoff, 2))
                await self._close_producer()
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff)


@contextlib.contextmanager
def relay_process(options: dict[str, Any]) -> Any:
    """The relay child, always stopped (politely, then terminated) on exit."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=relay_child, args=(child, options), name="outbox-relay", daemon=True)
    process.start()
    try:
        if not parent.poll(60) or parent.recv() != "started":
            raise RuntimeError("the relay process did not start")
        yield parent
        parent.send("stop")
        if parent.poll(15):
            parent.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.terminate()
            process.join(5)


def collect(parent: multiprocessing.connection.Connection) -> dict[str, Any]:
    parent.send("collect")
    if not parent.poll(30):
        raise RuntimeError("the relay process did not answer")
    answer: dict[str, Any] = parent.recv()
    return answer


# --- writers and the consumer -----------------------------------------------------------------------------------


@dataclass
class Run:
    prefix: str
    expected: int
    complete: asyncio.Event = field(default_factory=asyncio.Event)  # every expected row has arrived
    commits: dict[str, float] = field(default_factory=dict)  # key -> commit returned (time.time())
    commit_seconds: list[float] = field(default_factory=list)  # how long each commit call took
    arrivals: dict[str, float] = field(default_factory=dict)  # key -> consumed (time.time())
    first_commit_start: float = 0.0
    last_commit: float = 0.0


def outbox_row(key: str) -> tuple[str, str, str, str, bytes]:
    """A row like ``render.created``: CloudEvent headers as JSON, the event data as the payload (~600 bytes)."""
    data = {
        "renderId": key,
        "userId": str(uuid.uuid4()),
        "status": "pending",
        "quality": "standard",
        "style": "photorealistic",
        "aspectRatio": "16:9",
        "model": "local",
        "platform": "sketchup",
        "pluginVersion": "1.4.2",
        "creditsCost": 5,
        "creditsUsed": 0,
        "createdAt": "2025-01-01T00:00:00+00:00",
    }
    event = CloudEvent(source="/services/renders", type="render.created", subject=key, data=data)
    headers = {k: v.decode() for k, v in event.kafka_headers()}
    return event.id, TOPIC, key, orjson.dumps(headers).decode(), event.kafka_value()


class Consumer:
    """Assigned every partition of the topic at its end; records the arrival of every record by key."""

    def __init__(self, bootstrap: str, fetch_wait_ms: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_wait_ms,
            auto_offset_reset="latest",
        )
        self.run: Run | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=1000)
            now = time.time()
            if self.run is None:
                continue
            run = self.run
            for records in batches.values():
                for record in records:
                    key = record.key.decode() if record.key is not None else ""
                    if key.startswith(run.prefix):
                        run.arrivals.setdefault(key, now)
            if len(run.arrivals) >= run.expected:
                run.complete.set()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.consumer.stop()


async def commit_one(pool: asyncpg.Pool, run: Run, key: str) -> None:
    row = outbox_row(key)
    t0 = time.time()
    await pool.execute(INSERT_SQL, *row)  # autocommit: one transaction per row
    done = time.time()
    run.commits[key] = done
    run.commit_seconds.append(done - t0)
    run.last_commit = max(run.last_commit, done)


async def steady(pool: asyncpg.Pool, run: Run, rate: float) -> None:
    """Open loop: commit i is started at start + i / rate whatever the previous ones are doing."""
    count, prefix = run.expected, run.prefix
    start = time.perf_counter()
    run.first_commit_start = time.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(commit_one(pool, run, f"{prefix}{i}")))
    await asyncio.gather(*tasks)


async def burst(pool: asyncpg.Pool, run: Run, writers: int) -> None:
    """``writers`` connections commit ``run.expected`` rows between them as fast as they can."""
    counter, prefix = iter(range(run.expected)), run.prefix
    run.first_commit_start = time.time()

    async def writer() -> None:
        for i in counter:
            await commit_one(pool, run, f"{prefix}{i}")

    await asyncio.gather(*(writer() for _ in range(writers)))


async def wait_arrivals(run: Run, limit_seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_seconds):
            await run.complete.wait()


def figures(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1]),
        "mean_ms": ms(statistics.fmean(ordered)),
        "over_50ms": sum(1 for x in ordered if x > 0.05),
        "over_500ms": sum(1 for x in ordered if x > 0.5),
    }


def summarize_run(run: Run, relay: dict[str, Any], mode: str) -> dict[str, Any]:
    expected = run.expected
    lags = [run.arrivals[k] - t for k, t in run.commits.items() if k in run.arrivals]
    missing = expected - len(lags)
    last_arrival = max((run.arrivals[k] for k in run.commits if k in run.arrivals), default=run.last_commit)
    span = last_arrival - run.first_commit_start
    batches = relay["batches"]
    return {
        "mode": mode,
        "rows": expected,
        "missing": missing,
        "commit_to_consumed": figures(lags),
        "relay_ack_lag": figures(relay["lags"]),
        "commit_call": figures(run.commit_seconds),
        "commit_rate_per_s": round(len(run.commits) / max(1e-9, run.last_commit - run.first_commit_start), 1),
        "end_to_end_throughput_per_s": round(len(lags) / span, 1) if span > 0 else 0.0,
        "relay_batches": {
            "count": len(batches),
            "mean_rows": round(statistics.fmean(batches), 1) if batches else 0.0,
            "max_rows": max(batches, default=0),
        },
    }


# --- orchestration ----------------------------------------------------------------------------------------------


async def prepare_database(admin_url: str) -> str:
    from shared.db import plain_dsn

    conn = await asyncpg.connect(plain_dsn(admin_url))
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + f"/{DATABASE}"


async def measure(database_url: str, bootstrap: str, args: dict[str, Any]) -> list[dict[str, Any]]:
    from shared.db import plain_dsn

    variants = ["as_is", "wake_before_publish"] if args["compare_fix"] else ["as_is"]
    defaults = relay_defaults()
    consumer = Consumer(bootstrap, args["fetch_wait_ms"])
    await consumer.start()
    pool = await asyncpg.create_pool(plain_dsn(database_url), min_size=4, max_size=max(8, args["burst_writers"]))
    results = []
    try:
        for variant in variants:
            options = {
                "database_url": database_url,
                "bootstrap": bootstrap,
                "patched": variant == "wake_before_publish",
                **defaults,
            }
            with relay_process(options) as relay:
                # Warm-up: producer connection, metadata of every partition, prepared statements.
                warm = Run(f"{variant}-warm-", 100)
                consumer.run = warm
                await burst(pool, warm, 4)
                await wait_arrivals(warm, 15)
                collect(relay)
                for mode in ("steady", "burst"):
                    if mode == "steady":
                        run = Run(f"{variant}-{mode}-", int(args["rate"] * args["duration"]))
                        consumer.run = run
                        await steady(pool, run, args["rate"])
                    else:
                        run = Run(f"{variant}-{mode}-", args["burst"])
                        consumer.run = run
                        await burst(pool, run, args["burst_writers"])
                    await wait_arrivals(run, 20)
                    await asyncio.sleep(0.2)
                    expected = run.expected
                    summary = {"relay": variant, **summarize_run(run, collect(relay), mode)}
                    results.append(summary)
                    c, r = summary["commit_to_consumed"], summary["relay_ack_lag"]
                    print(
                        f"{variant:<20}{mode:<7} rows {expected:>5} missing {summary['missing']:>3}  "
                        f"commit->consumed p50 {c.get('p50_ms', 0):7.1f} p99 {c.get('p99_ms', 0):7.1f} "
                        f"max {c.get('max_ms', 0):7.1f} ms  | relay ack lag p50 {r.get('p50_ms', 0):6.1f} "
                        f"p99 {r.get('p99_ms', 0):7.1f} ms | {summary['end_to_end_throughput_per_s']:.0f} ev/s, "
                        f"batches {summary['relay_batches']['count']} (mean {summary['relay_batches']['mean_rows']})",
                        flush=True,
                    )
                consumer.run = None
    finally:
        await pool.close()
        await consumer.stop()
    return results


def main(
    rate: float = typer.Option(200.0, min=1.0, max=5000.0, help="Steady mode: commits per second (open loop)."),
    duration: float = typer.Option(10.0, min=1.0, max=60.0, help="Steady mode: seconds."),
    burst_rows: int = typer.Option(2000, "--burst", min=10, max=50_000, help="Burst mode: rows in all."),
    burst_writers: int = typer.Option(16, min=1, max=64, help="Burst mode: concurrent writer connections."),
    fetch_wait_ms: int = typer.Option(5, min=0, max=500, help="Consumer fetch_max_wait_ms."),
    compare_fix: bool = typer.Option(True, help="Also run the wake-before-publish relay variant."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure outbox commit -> Kafka latency with the real relay on embedded PostgreSQL + Tansu."""
    args = {
        "rate": rate,
        "duration": duration,
        "burst": burst_rows,
        "burst_writers": burst_writers,
        "fetch_wait_ms": fetch_wait_ms,
        "compare_fix": compare_fix,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
        kafka = EmbeddedKafka(free_port(), Path(tmp) / "kafka.log")
        try:
            postgres.start()
            kafka.start()
            from shared.migrations import upgrade

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                database_url = runner.run(prepare_database(postgres.url))
                upgrade(database_url, services=(SCHEMA,))
                runner.run(ensure_topics(kafka.bootstrap, PARTITIONS, topics=[TOPIC]))
                print(f"engines up after {time.monotonic() - started:.1f}s; relay defaults {relay_defaults()}")
                results = runner.run(measure(database_url, kafka.bootstrap, args))
        finally:
            kafka.stop()
            postgres.stop()
    report(results, args, output, started)


def report(results: list[dict[str, Any]], args: dict[str, Any], output: Path, started: float) -> None:
    print(f"\ngoal: commit -> event on Kafka p99 <= {GOAL_P99_MS:.0f} ms")
    for r in results:
        p99 = r["commit_to_consumed"].get("p99_ms", float("inf"))
        print(f"  {r['relay']:<20} {r['mode']:<7} p99 {p99:8.1f} ms -> {'met' if p99 <= GOAL_P99_MS else 'NOT met'}")
    write_json(
        output,
        {
            **run_metadata(),
            "config": {**args, "relay": relay_defaults(), "topic_partitions": PARTITIONS},
            "postgres_fsync": "off" if os.environ.get("CI") else "on",
            "goal_p99_ms": GOAL_P99_MS,
            "results": results,
            "wall_seconds": round(time.monotonic() - started, 1),
            "notes": [
                "commit_to_consumed: consumer arrival - writer commit return, per event, same process clock",
                "relay_ack_lag: the relay's own plugin_outbox_publish_lag_seconds observations (created_at = "
                "writer transaction start -> Kafka ack), captured per row",
                "wake_before_publish: OutboxRelay with _wake.clear() moved before the publish pass (proposal)",
            ],
        },
    )


if __name__ == "__main__":
    typer.run(main)
