"""Webhook delivery: throughput of the dispatcher process(es) and render event -> webhook latency, end to end.

Engines: embedded PostgreSQL and the Tansu broker (``shared.engines``, as ``make run``; PostgreSQL with
``fsync=on`` unless ``CI`` is set), or ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP_SERVERS`` when set (a fresh database is
created on that server and dropped at the end). The webhooks migrations are applied and every platform topic is
created. The receiver is a separate process: a raw asyncio HTTP/1.1 server on uvloop with keep-alive that answers
``200`` at once and records, per request, its arrival time (``time.time()``) and ``webhook-id`` header. Each
dispatcher is the real process, ``python -m services.webhooks.dispatcher``, tuned only through its environment
(``LOG_LEVEL=WARNING`` plus whatever ``--set`` gives; the effective settings are reported).

1. ``one``: ONE dispatcher. ``--endpoints`` (4) endpoints are registered with ``service.register`` (one user,
   distinct paths on the receiver), a warm-up batch is delivered, the idle CPU is sampled, then ``--deliveries``
   pending ``render.completed`` rows (round-robin over the endpoints, realistic signed bodies, row ``i`` due at
   T + ``i`` microseconds, or all at exactly T with ``--tied-due``) are COPYed into ``webhooks.deliveries`` with T
   ``--lead-seconds`` ahead: the dispatcher sits idle, then all become due at once. Measured: the receiver's
   first -> last request, the table's first -> last ``completed_at`` (and completions per second) and due -> no
   row pending, as deliveries/s; CPU seconds over due -> no row pending of each dispatcher, the receiver,
   PostgreSQL (all its processes, and split by ``application_name``), the broker, this process and the rest of
   the machine; attempt durations as the dispatcher logged them; how long its relay takes to publish the
   ``webhook.events`` outbox rows. The table is not polled while the dispatchers work (the receiver's count says
   when to look). A phase is cut at ``--phase-timeout`` s (its leftover rows are canceled): rates are then those of
   the part delivered. Goal: >= 2,000 deliveries/s.
2. ``two``: the same with TWO dispatcher processes sharing the table. Goal: >= 1.7x ``one``. Exactly-once: the
   receiver counts requests per ``webhook-id`` (one event id per row here); duplicates must be 0, and the table
   must show one attempt per delivery.
3. ``latency``: ONE dispatcher (a fresh consumer group), one more endpoint owned by another user. ``--events``
   ``render.completed`` CloudEvents (binary mode, ``RenderEventV1`` data with that user as ``userId``) are
   published to ``render.events`` with the platform's producer settings (``shared.kafka.make_producer``) open loop
   at ``--rate``/s, after a warm-up that waits for the consumer group's assignment; latency = the receiver's
   arrival time - the publish call (both ``time.time()`` on this machine), split with the delivery row's
   ``created_at`` (the consumer's transaction start) into Kafka + consumer and claim + POST, and with its
   ``completed_at`` (the recorder). Goal: p50 <= 50 ms, p99 <= 200 ms.

The machine has 2 cores and the dispatchers, PostgreSQL, the broker and the receiver share them (and with whatever
else runs): each phase reports the machine's busy CPU and how much of it was other processes'.

``--py-spy PATH`` samples dispatcher 1 of each phase with py-spy (``--nonblocking``; raw collapsed stacks next to
the JSON result) and prints its hottest frames. ``--keep-logs DIR`` keeps the engines' and dispatchers' logs.
Writes ``bench/results/webhook_delivery.json``.

Run: ``.venv/bin/python -m bench.webhook_delivery [--deliveries 20000] [--endpoints 4] [--events 500] [--rate 50]
[--phases one,two,latency] [--set WEBHOOKS_ENDPOINT_CONCURRENCY=512 ...] [--py-spy /path/to/py-spy]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from unittest import mock

import asyncpg
import httpx
import psutil
import typer
import uvloop

from bench.loadgen import latency_figures, ms, percentile, run_metadata, write_json
from bench.stack import (
    DROPPED_NAMES,
    DROPPED_PREFIXES,
    REPO_ROOT,
    RESULTS_DIR,
    cpu_delta,
    create_database,
    machine_busy_seconds,
    process_cpu_seconds,
)
from services.webhooks import service, signing
from services.webhooks.config import Settings
from services.webhooks.models import RegisterWebhookRequest
from shared.db import make_engine, make_sessionmaker, plain_dsn, unit_of_work
from shared.engines import EmbeddedKafka, EmbeddedPostgres, die_with_parent, free_port, stop_process, wait_for_port
from shared.events.contracts import RenderEventV1
from shared.events.envelope import CloudEvent
from shared.events.topics import RENDER_EVENTS
from shared.kafka import ensure_topics, make_producer
from shared.migrations import upgrade

RESULTS_FILE = RESULTS_DIR / "webhook_delivery.json"
PARTITIONS = 12
EVENT_TYPE = "render.completed"
THROUGHPUT_USER = "bench-throughput-user"
LATENCY_USER = "bench-latency-user"
GOAL_ONE_PER_S = 2000.0
GOAL_TWO_RATIO = 1.7
GOAL_P50_MS = 50.0
GOAL_P99_MS = 200.0
BASE_TUNING = {"LOG_LEVEL": "WARNING"}
REPORTED_SETTINGS = (
    "endpoint_concurrency",
    "max_in_flight",
    "claim_batch",
    "poll_seconds",
    "lease_seconds",
    "timeout_seconds",
    "db_pool_size",
    "outbox_batch_size",
    "outbox_poll_seconds",
    "log_level",
)
COPY_COLUMNS = (
    "id",
    "event_id",
    "event_type",
    "event_time",
    "user_id",
    "endpoint_id",
    "target_key",
    "url",
    "payload",
    "next_attempt_at",
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def say(message: str) -> None:
    print(message, flush=True)


# --- the receiver, a process of its own -------------------------------------------------------------------------


class ReceiverState:
    """What the receiver saw since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_id: dict[str, int] = {}
        self.first_arrival: dict[str, float] = {}
        self.arrivals: list[float] = []
        self.connections = 0

    def record(self, webhook_id: str, now: float) -> None:
        self.requests += 1
        self.arrivals.append(now)
        seen = self.by_id.get(webhook_id, 0)
        self.by_id[webhook_id] = seen + 1
        if not seen:
            self.first_arrival[webhook_id] = now

    def snapshot(self, with_ids: bool) -> dict[str, Any]:
        duplicates = sum(n - 1 for n in self.by_id.values() if n > 1)
        return {
            "requests": self.requests,
            "distinct_webhook_ids": len(self.by_id),
            "duplicates": duplicates,
            "connections_opened": self.connections,
            "arrivals": list(self.arrivals),
            **({"first_arrival": dict(self.first_arrival)} if with_ids else {}),
        }


class ReceiverProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: every complete request (head + ``Content-Length`` body) gets ``200`` at once."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is not a subclass
        self.state.connections += 1

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            webhook_id = ""
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lname = name.strip().lower()
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"webhook-id":
                    webhook_id = value.strip().decode()
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            del self.buffer[:total]
            self.state.record(webhook_id, now)
            assert self.transport is not None
            self.transport.write(RESPONSE)


def receiver_child(conn: multiprocessing.connection.Connection, port: int) -> None:
    uvloop.run(_receiver_main(conn, port))


async def _receiver_main(conn: multiprocessing.connection.Connection, port: int) -> None:
    state = ReceiverState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ReceiverProtocol(state), "127.0.0.1", port, backlog=1024)
    stopped = asyncio.Event()

    async def answer(command: str) -> dict[str, Any]:
        if command == "reset":
            state.reset()
            return {}
        if command == "stop":
            stopped.set()
            return {}
        if command == "count":
            return {"requests": state.requests}
        return state.snapshot(with_ids=command == "collect_ids")

    def serve_commands() -> None:
        """Commands are read and answered in this thread; only the snapshot itself is taken on the loop."""
        while True:
            try:
                command = conn.recv()
            except EOFError:
                command = "stop"
            reply = asyncio.run_coroutine_threadsafe(answer(command), loop).result()
            with contextlib.suppress(OSError):
                conn.send(reply)
            if command == "stop":
                return

    threading.Thread(target=serve_commands, daemon=True).start()
    conn.send("started")
    await stopped.wait()
    server.close()


class Receiver:
    """The receiver process, driven through a pipe."""

    def __init__(self, port: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.port = port
        self.parent, child = context.Pipe()
        self.process = context.Process(target=receiver_child, args=(child, port), name="webhook-receiver", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self.process.start()
        if not self.parent.poll(60) or self.parent.recv() != "started":
            raise RuntimeError("the receiver process did not start")

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def ask(self, command: str) -> dict[str, Any]:
        with self._lock:
            self.parent.send(command)
            if not self.parent.poll(60):
                raise RuntimeError(f"the receiver did not answer {command!r}")
            answer: dict[str, Any] = self.parent.recv()
            return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ask("stop")
        self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# --- dispatcher processes ---------------------------------------------------------------------------------------


@dataclass
class Context:
    """Engines, the receiver and the settings every phase uses."""

    database_url: str
    bootstrap: str
    receiver: Receiver
    pool: asyncpg.Pool
    tuning: dict[str, str]
    logs: Path
    engine_processes: dict[str, psutil.Process]
    throughput_endpoints: list[tuple[str, str]] = field(default_factory=list)  # (endpoint id, url)
    latency_endpoint: tuple[str, str] = ("", "")
    py_spy: str | None = None
    profile_dir: Path | None = None


def dispatcher_env(ctx: Context, port: int, group: str) -> dict[str, str]:
    """The product's defaults plus the bench's tuning: inherited service settings and engine URLs are dropped."""
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_NAMES and not k.startswith(DROPPED_PREFIXES)}
    env.update(
        {
            "APP_ENV": "dev",
            "DATABASE_URL": ctx.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": ctx.bootstrap,
            "WEBHOOKS_DISPATCHER_PORT": str(port),
            "WEBHOOKS_CONSUMER_GROUP": group,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(ctx.tuning)
    return env


def effective_settings(tuning: dict[str, str]) -> dict[str, Any]:
    """The dispatcher's settings as it will read them from the environment the bench gives it."""
    with mock.patch.dict(os.environ, {"APP_ENV": "dev", **tuning}, clear=True):
        settings = Settings()
    return {name: getattr(settings, name) for name in REPORTED_SETTINGS}


@dataclass
class DispatcherProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


def start_dispatcher(ctx: Context, name: str, group: str) -> DispatcherProcess:
    port = free_port()
    log_path = ctx.logs / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.webhooks.dispatcher"],
            cwd=REPO_ROOT,
            env=dispatcher_env(ctx, port, group),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        wait_for_port(port, 60, proc)  # uvicorn listens once the lifespan (pool, relay, delivery engine) is up
    except BaseException:
        stop_process(proc)
        sys.stderr.write(f"{name} log tail:\n{log_path.read_text(errors='replace')[-3000:]}\n")
        raise
    return DispatcherProcess(proc, port, log_path)


@contextlib.asynccontextmanager
async def dispatchers(ctx: Context, count: int, group: str) -> AsyncIterator[list[DispatcherProcess]]:
    started: list[DispatcherProcess] = []
    try:
        for i in range(count):
            started.append(await asyncio.to_thread(start_dispatcher, ctx, f"dispatcher-{group}-{i + 1}", group))
        yield started
    except BaseException:
        for d in started:
            with contextlib.suppress(OSError):
                sys.stderr.write(f"{d.log_path.name} tail:\n{d.log_path.read_text(errors='replace')[-3000:]}\n")
        raise
    finally:
        for d in started:
            await asyncio.to_thread(stop_process, d.proc, signal.SIGTERM, 30)
            if d.proc.returncode not in (0, -signal.SIGTERM):
                say(f"  {d.log_path.name} exited with {d.proc.returncode}")


def error_lines(d: DispatcherProcess, limit: int = 5) -> list[str]:
    """Warnings and errors the dispatcher logged (LOG_LEVEL=WARNING: everything it logged)."""
    try:
        lines = d.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    interesting = [line for line in lines if "warn" in line.lower() or "error" in line.lower()]
    return interesting[:limit]


async def scrape_metrics(d: DispatcherProcess) -> dict[str, float]:
    """The dispatcher's own counters: attempts by outcome, events consumed, outbox rows published."""
    wanted = ("plugin_webhook_attempts_total", "plugin_events_consumed_total", "plugin_outbox_published_total")
    found: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{d.port}/metrics")).text
    except httpx.HTTPError:
        return found
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


# --- rows, endpoints, events ------------------------------------------------------------------------------------


async def register_endpoints(database_url: str, receiver_port: int, count: int) -> tuple[list[tuple[str, str]], Any]:
    """``count`` endpoints of the throughput user and one of the latency user, through ``service.register``."""
    engine = make_engine(database_url, schema="webhooks", pool_size=2)
    sessions = make_sessionmaker(engine)
    base = f"http://127.0.0.1:{receiver_port}/hooks"
    created: list[tuple[str, str]] = []
    try:
        for user, url in [*((THROUGHPUT_USER, f"{base}/t{i}") for i in range(count)), (LATENCY_USER, f"{base}/lat")]:
            async with unit_of_work(sessions) as session:
                registered = await service.register(
                    session,
                    user,
                    RegisterWebhookRequest(url=url, events=[EVENT_TYPE], description="bench"),
                    allow_private=True,
                    max_endpoints=max(50, count),
                )
            created.append((registered.webhook_id, registered.url))
    finally:
        await engine.dispose()
    return created[:-1], created[-1]


def delivery_records(
    endpoints: list[tuple[str, str]], count: int, due: datetime, *, tied: bool = False
) -> list[tuple[Any, ...]]:
    """Pending ``render.completed`` deliveries, round-robin over the endpoints, each its own event id and body.

    Row ``i`` is due at ``due`` + ``i`` microseconds (a backlog of events written one after another, all due within
    a few ms), or, with ``tied``, every row at exactly ``due`` (as rows re-queued by one statement are).
    """
    records = []
    now = datetime.now(UTC)
    for i in range(count):
        endpoint_id, url = endpoints[i % len(endpoints)]
        render_id = str(uuid.uuid4())
        data = {
            "renderId": render_id,
            "status": "completed",
            "outputUrl": f"http://127.0.0.1:8080/api/plugins/files/outputs/{render_id}.png?sig=abcdef0123456789",
            "creditsUsed": 5,
            "projectId": "7f1c3a52-4a56-4f63-9d55-1c2e7d8b9a10",
        }
        payload = signing.render_body(EVENT_TYPE, now, data)
        ids = (str(uuid.uuid4()), str(uuid.uuid4()))
        at = due if tied else due + timedelta(microseconds=i)
        records.append((*ids, EVENT_TYPE, now, THROUGHPUT_USER, endpoint_id, endpoint_id, url, payload, at))
    return records


async def insert_deliveries(pool: asyncpg.Pool, records: list[tuple[Any, ...]]) -> None:
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "deliveries", schema_name="webhooks", columns=list(COPY_COLUMNS), records=records
        )


async def max_seq(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM webhooks.deliveries")
    return int(value)


async def pending_after(pool: asyncpg.Pool, seq: int) -> int:
    value = await pool.fetchval("SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending' AND seq > $1", seq)
    return int(value)


async def wait_pending_zero(pool: asyncpg.Pool, seq: int, limit: float, interval: float = 0.2) -> float | None:
    """Poll until no delivery after ``seq`` is pending; the time.time() it was seen, or None after ``limit`` s."""
    deadline = time.monotonic() + limit
    while True:
        if await pending_after(pool, seq) == 0:
            return time.time()
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(interval)


async def wait_outbox_drained(pool: asyncpg.Pool, limit: float) -> float | None:
    """Poll until the dispatchers' relay has published every ``webhook.events`` outbox row; time.time() or None."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not await pool.fetchval("SELECT count(*) FROM webhooks.outbox WHERE sent_at IS NULL"):
            return time.time()
        await asyncio.sleep(0.2)
    return None


async def wait_delivered(ctx: Context, seq: int, count: int, limit: float) -> float | None:
    """Wait for ``count`` requests at the receiver (a pipe round trip, nothing asked of PostgreSQL while the
    dispatchers work), then for no delivery after ``seq`` to be pending; the time.time() that was seen, or None."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ctx.receiver.ask("count")["requests"] >= count:
            break
        await asyncio.sleep(0.05)
    return await wait_pending_zero(ctx.pool, seq, max(0.0, deadline - time.monotonic()), interval=0.05)


async def cancel_pending(pool: asyncpg.Pool, seq: int) -> int:
    status = await pool.execute(
        "UPDATE webhooks.deliveries SET status = 'canceled', completed_at = now(), next_attempt_at = NULL "
        "WHERE status = 'pending' AND seq > $1",
        seq,
    )
    return int(status.split()[-1])


async def table_figures(pool: asyncpg.Pool, seq: int) -> dict[str, Any]:
    """What the table recorded for the deliveries after ``seq``: outcomes, attempts, completion times."""
    row = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'canceled') AS canceled,
                  coalesce(sum(attempt_count), 0) AS attempt_count_sum,
                  coalesce(max(attempt_count), 0) AS attempt_count_max
           FROM webhooks.deliveries WHERE seq > $1""",
        seq,
    )
    attempts = await pool.fetch(
        "SELECT a.duration_ms, a.status_code FROM webhooks.attempts a JOIN webhooks.deliveries d "
        "ON d.id = a.delivery_id WHERE d.seq > $1",
        seq,
    )
    completed = sorted(
        r[0]
        for r in await pool.fetch(
            "SELECT extract(epoch FROM completed_at)::float8 FROM webhooks.deliveries "
            "WHERE seq > $1 AND status = 'succeeded'",
            seq,
        )
    )
    durations = sorted(float(r["duration_ms"]) for r in attempts)
    statuses = Counter(str(r["status_code"]) for r in attempts)
    return {
        **{k: int(v) for k, v in dict(row).items()},
        "attempt_rows": len(attempts),
        "attempt_status_codes": dict(statuses),
        "attempt_duration_ms": {
            "p50": percentile(durations, 50),
            "p90": percentile(durations, 90),
            "p99": percentile(durations, 99),
            "max": durations[-1] if durations else float("nan"),
        },
        "completed_at": completed,
    }


def render_event(render_id: str) -> CloudEvent:
    data = RenderEventV1(
        renderId=render_id,
        userId=LATENCY_USER,
        status="completed",
        quality="standard",
        style="photorealistic",
        aspectRatio="16:9",
        model="local",
        platform="sketchup",
        pluginVersion="1.4.2",
        projectId="7f1c3a52-4a56-4f63-9d55-1c2e7d8b9a10",
        creditsCost=5,
        creditsUsed=5,
        outputUrl=f"http://127.0.0.1:8080/api/plugins/files/outputs/{render_id}.png?sig=abcdef0123456789",
        processingTime=1.25,
        createdAt=datetime.now(UTC),
    ).model_dump(mode="json", exclude_none=True)
    return CloudEvent(source="/services/renders", type=EVENT_TYPE, subject=render_id, data=data)


# --- CPU --------------------------------------------------------------------------------------------------------


async def cpu_groups(ctx: Context, procs: list[DispatcherProcess]) -> dict[str, list[psutil.Process]]:
    """The processes whose CPU is reported: each dispatcher, the receiver, the engines (with their children), this
    process; and each PostgreSQL process again under ``pg/<role>`` (its ``application_name``, else its backend
    type: ``webhooks-dispatcher`` = the delivery engine's pool, ``webhooks`` = the consumer's sessions,
    ``webhooks-outbox`` = the relay, unnamed client backends = the LISTEN connections)."""
    groups: dict[str, list[psutil.Process]] = {}
    for i, d in enumerate(procs, 1):
        with contextlib.suppress(psutil.Error):
            groups[f"dispatcher-{i}"] = [d.process]
    groups["receiver"] = [psutil.Process(ctx.receiver.pid)]
    for name, root in ctx.engine_processes.items():
        with contextlib.suppress(psutil.Error):
            groups[name] = [root, *root.children(recursive=True)]
    groups["bench"] = [psutil.Process()]
    if "postgres" in ctx.engine_processes:
        roles = {
            r["pid"]: r["application_name"] or f"unnamed {r['backend_type']}"
            for r in await ctx.pool.fetch("SELECT pid, backend_type, application_name FROM pg_stat_activity")
        }
        for process in groups.get("postgres", []):
            role = roles.get(process.pid, "postmaster/other")
            groups.setdefault(f"pg/{role}", []).append(process)
    return groups


@dataclass
class CpuWindow:
    groups: dict[str, list[psutil.Process]]
    before: dict[tuple[str, int], float]
    machine_before: float
    started: float

    @classmethod
    def open(cls, groups: dict[str, list[psutil.Process]]) -> CpuWindow:
        return cls(groups, process_cpu_seconds(groups), machine_busy_seconds(), time.perf_counter())

    def close(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        everything = cpu_delta(self.before, process_cpu_seconds(self.groups))
        spent = {k: v for k, v in everything.items() if not k.startswith("pg/")}
        roles = {k[3:]: round(v, 2) for k, v in sorted(everything.items()) if k.startswith("pg/") and v >= 0.01}
        dispatcher_total = sum(v for k, v in spent.items() if k.startswith("dispatcher-"))
        busy = machine_busy_seconds() - self.machine_before
        return {
            "window_seconds": round(elapsed, 3),
            "cpu_seconds": {k: round(v, 2) for k, v in sorted(spent.items())},
            "dispatchers_cpu_seconds": round(dispatcher_total, 2),
            "postgres_cpu_seconds_by_role": roles,
            "machine_busy_seconds": round(busy, 2),
            "other_processes_cpu_seconds": round(max(0.0, busy - sum(spent.values())), 2),
            "machine_capacity_seconds": round(elapsed * (os.cpu_count() or 1), 2),
        }


# --- profiling --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(ctx: Context, pid: int, phase: str) -> Iterator[Path | None]:
    """py-spy samples ``pid`` (raw collapsed stacks, without pausing it) until the block ends; nothing without
    ``--py-spy``."""
    if ctx.py_spy is None or ctx.profile_dir is None:
        yield None
        return
    output = ctx.profile_dir / f"webhook_delivery.{phase}.pyspy.txt"
    command = [ctx.py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw"]
    proc = subprocess.Popen(
        [*command, "--output", str(output)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        time.sleep(0.5)  # attach before the work starts
        yield output
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (0, -signal.SIGINT) and not output.exists():
            say(f"  py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest frames of a raw (collapsed) py-spy profile."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "share": round(n / total, 4)} for f, n in counter.most_common(top)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)} if total else {"samples": 0}


# --- phases -----------------------------------------------------------------------------------------------------


def print_profile(result: dict[str, Any]) -> None:
    profile = result.get("profile_of_dispatcher_1")
    if not profile or not profile.get("samples"):
        return
    say(f"  py-spy of dispatcher-1 ({profile['samples']} samples), hottest frames, self:")
    for item in profile["self"][:12]:
        say(f"    {item['share'] * 100:5.1f}%  {item['frame'][:150]}")
    say("  inclusive:")
    for item in profile["inclusive"][:30]:
        say(f"    {item['share'] * 100:5.1f}%  {item['frame'][:150]}")


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def per_second(times: list[float], origin: float) -> list[int]:
    """How many of ``times`` fell in each second after ``origin``."""
    if not times:
        return []
    buckets = [0] * (int(max(times) - origin) + 1)
    for t in times:
        buckets[max(0, int(t - origin))] += 1
    return buckets


async def warm_up(ctx: Context, count: int) -> None:
    """Deliver ``count`` rows due now (connections, prepared statements, the relay's producer) and wait for them."""
    seq = await max_seq(ctx.pool)
    await insert_deliveries(ctx.pool, delivery_records(ctx.throughput_endpoints, count, datetime.now(UTC)))
    if await wait_pending_zero(ctx.pool, seq, 60) is None:
        raise RuntimeError(f"warm-up: {await pending_after(ctx.pool, seq)} of {count} deliveries still pending")


async def idle_cpu(ctx: Context, procs: list[DispatcherProcess], seconds: float = 2.0) -> dict[str, float]:
    """CPU seconds per second each process burns with nothing to do (pollers, consumers, relays)."""
    window = CpuWindow.open(await cpu_groups(ctx, procs))
    await asyncio.sleep(seconds)
    spent = window.close()
    return {k: round(v / spent["window_seconds"], 3) for k, v in spent["cpu_seconds"].items()}


async def throughput_phase(ctx: Context, name: str, processes: int, args: dict[str, Any]) -> dict[str, Any]:
    count, lead, limit = args["deliveries"], args["lead_seconds"], args["phase_timeout"]
    say(
        f"\n[{name}] {processes} dispatcher process(es), {count} deliveries over {len(ctx.throughput_endpoints)} "
        f"endpoint(s)"
    )
    async with dispatchers(ctx, processes, f"webhooks-bench-{name}") as procs:
        await warm_up(ctx, args["warmup"])
        await asyncio.sleep(1.0)  # let the relay publish the warm-up's outbox rows
        idle = await idle_cpu(ctx, procs)
        ctx.receiver.ask("reset")
        seq = await max_seq(ctx.pool)
        due = time.time() + lead
        records = delivery_records(
            ctx.throughput_endpoints, count, datetime.fromtimestamp(due, UTC), tied=args["tied_due"]
        )
        t_insert = time.perf_counter()
        await insert_deliveries(ctx.pool, records)
        insert_seconds = time.perf_counter() - t_insert
        if time.time() > due - 0.3:
            say(f"  warning: inserting took {insert_seconds:.2f}s, rows were due before the insert ended")
        groups = await cpu_groups(ctx, procs)
        with py_spy(ctx, procs[0].proc.pid, name) as profile_path:
            await asyncio.sleep(max(0.0, due - time.time() - 0.05))
            window = CpuWindow.open(groups)
            done_at = await wait_delivered(ctx, seq, count, limit)
            cpu = window.close()
        canceled = 0
        if done_at is None:
            say(f"  NOT complete after {limit:.0f}s: {await pending_after(ctx.pool, seq)} still pending")
        drained_at = await wait_outbox_drained(ctx.pool, 30.0)
        metrics = [await scrape_metrics(d) for d in procs]
        errors = {f"dispatcher-{i}": error_lines(d) for i, d in enumerate(procs, 1)}
    if done_at is None:
        canceled = await cancel_pending(ctx.pool, seq)
    await asyncio.sleep(0.3)  # the last responses are written before the recorder commits; be generous anyway
    seen = ctx.receiver.ask("collect")
    table = await table_figures(ctx.pool, seq)
    arrivals = sorted(seen["arrivals"])
    completed = table.pop("completed_at")
    receiver_span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    table_span = completed[-1] - completed[0] if len(completed) > 1 else 0.0
    end = done_at if done_at is not None else time.time()
    result: dict[str, Any] = {
        "phase": name,
        "dispatcher_processes": processes,
        "endpoints": len(ctx.throughput_endpoints),
        "deliveries": count,
        "complete": done_at is not None,
        "canceled_after_timeout": canceled,
        "insert_seconds": round(insert_seconds, 3),
        "idle_cpu_per_s": idle,
        "receiver": {
            "requests": seen["requests"],
            "distinct_webhook_ids": seen["distinct_webhook_ids"],
            "duplicates": seen["duplicates"],
            "connections_opened": seen["connections_opened"],
            "first_after_due_ms": ms(arrivals[0] - due) if arrivals else None,
            "first_to_last_seconds": round(receiver_span, 3),
            "deliveries_per_s": rate(len(arrivals) - 1, receiver_span),
            "per_second": per_second(arrivals, arrivals[0]) if arrivals else [],
        },
        "table": {
            **table,
            "first_to_last_completed_seconds": round(table_span, 3),
            "deliveries_per_s": rate(len(completed) - 1, table_span),
            "due_to_all_recorded_seconds": round(end - due, 3),
            "due_to_all_recorded_per_s": rate(table["succeeded"], end - due),
            "per_second": per_second(completed, completed[0]) if completed else [],
        },
        "outbox_drained_after_all_recorded_seconds": (
            round(drained_at - done_at, 3) if drained_at is not None and done_at is not None else None
        ),
        "cpu": cpu,
        "dispatcher_metrics": metrics,
        "dispatcher_log_warnings": errors,
    }
    if cpu["window_seconds"] > 0 and table["succeeded"]:
        result["cpu_ms_per_delivery"] = {
            k: round(v / table["succeeded"] * 1000, 3) for k, v in cpu["cpu_seconds"].items()
        }
    if profile_path is not None and profile_path.exists():
        result["profile_of_dispatcher_1"] = {"file": str(profile_path), **summarize_profile(profile_path)}
    r, t = result["receiver"], result["table"]
    say(
        f"  receiver: {r['requests']} requests ({r['duplicates']} duplicates), first->last "
        f"{r['first_to_last_seconds']}s = {r['deliveries_per_s']:.0f}/s | table: {t['succeeded']} succeeded, "
        f"first->last completed "
        f"{t['first_to_last_completed_seconds']}s = {t['deliveries_per_s']:.0f}/s, due->all recorded "
        f"{t['due_to_all_recorded_seconds']}s = {t['due_to_all_recorded_per_s']:.0f}/s"
    )
    say(
        f"  attempt duration (dispatcher's view) p50 {t['attempt_duration_ms']['p50']:.0f} ms p99 "
        f"{t['attempt_duration_ms']['p99']:.0f} ms; attempts {t['attempt_rows']} for {t['succeeded']} succeeded"
    )
    say(f"  relay: outbox drained {result['outbox_drained_after_all_recorded_seconds']} s after all recorded")
    say(f"  idle CPU s/s before the rows were due: {idle}")
    say(f"  postgres CPU s by role: {cpu['postgres_cpu_seconds_by_role']}")
    say(
        f"  CPU s over {cpu['window_seconds']}s: {cpu['cpu_seconds']} (machine busy {cpu['machine_busy_seconds']} of "
        f"{cpu['machine_capacity_seconds']}, of which other processes {cpu['other_processes_cpu_seconds']})"
    )
    print_profile(result)
    return result


async def wait_received(ctx: Context, ids: set[str], limit: float) -> dict[str, float]:
    deadline = time.monotonic() + limit
    while True:
        seen: dict[str, float] = ctx.receiver.ask("collect_ids")["first_arrival"]
        if ids <= seen.keys() or time.monotonic() > deadline:
            return {k: v for k, v in seen.items() if k in ids}
        await asyncio.sleep(0.25)


async def latency_phase(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    events, per_s = args["events"], args["rate"]
    say(f"\n[latency] 1 dispatcher process, {events} render.completed events at {per_s:g}/s (open loop)")
    group = f"webhooks-bench-latency-{uuid.uuid4().hex[:8]}"
    async with dispatchers(ctx, 1, group) as procs:
        producer = make_producer(ctx.bootstrap, client_id="bench-webhook-latency")
        await producer.start()
        try:
            # Warm-up: publish until the consumer group has its partitions and the first event comes through.
            started = time.monotonic()
            warm_ids: set[str] = set()
            while time.monotonic() - started < 60:
                event = render_event(str(uuid.uuid4()))
                warm_ids.add(event.id)
                await producer.send_and_wait(
                    RENDER_EVENTS, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
                )
                if await wait_received(ctx, warm_ids, 0.0):
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError("latency warm-up: no event came through within 60 s")
            say(f"  consumer ready after {time.monotonic() - started:.1f}s")
            for _ in range(int(per_s)):  # a second of traffic at the rate, so every partition has been fetched
                event = render_event(str(uuid.uuid4()))
                await producer.send(
                    RENDER_EVENTS, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
                )
                await asyncio.sleep(1 / per_s)
            await asyncio.sleep(1.0)
            ctx.receiver.ask("reset")
            seq = await max_seq(ctx.pool)
            published: dict[str, float] = {}
            acked: dict[str, float] = {}

            async def publish(event: CloudEvent) -> None:
                published[event.id] = time.time()
                future = await producer.send(
                    RENDER_EVENTS, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers()
                )
                await future
                acked[event.id] = time.time()

            idle = await idle_cpu(ctx, procs)
            with py_spy(ctx, procs[0].proc.pid, "latency") as profile_path:
                groups = await cpu_groups(ctx, procs)
                window = CpuWindow.open(groups)
                tasks = []
                begin = time.perf_counter()
                for i in range(events):
                    delay = begin + i / per_s - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(publish(render_event(str(uuid.uuid4())))))
                await asyncio.gather(*tasks)
                arrived = await wait_received(ctx, set(published), 15.0)
                cpu = window.close()
        finally:
            await producer.stop()
        metrics = await scrape_metrics(procs[0])
        errors = error_lines(procs[0])
    seen = ctx.receiver.ask("collect")
    rows = await ctx.pool.fetch(
        "SELECT event_id, extract(epoch FROM created_at)::float8 AS created, "
        "extract(epoch FROM completed_at)::float8 AS completed, status, attempt_count "
        "FROM webhooks.deliveries WHERE seq > $1 AND user_id = $2",
        seq,
        LATENCY_USER,
    )
    by_event = {r["event_id"]: r for r in rows}
    latencies = sorted(arrived[k] - published[k] for k in arrived)
    to_row = sorted(by_event[k]["created"] - published[k] for k in published if k in by_event)
    row_to_arrival = sorted(arrived[k] - by_event[k]["created"] for k in arrived if k in by_event)
    arrival_to_recorded = sorted(
        by_event[k]["completed"] - arrived[k] for k in arrived if k in by_event and by_event[k]["completed"]
    )
    ack = sorted(acked[k] - published[k] for k in acked)
    result: dict[str, Any] = {
        "phase": "latency",
        "events": events,
        "rate_per_s": per_s,
        "received": len(latencies),
        "missing": events - len(latencies),
        "receiver_requests": seen["requests"],
        "duplicates": seen["duplicates"],
        "delivery_rows": len(rows),
        "publish_to_received": latency_figures(latencies),
        "split": {
            "publish_to_row_created": latency_figures(to_row),
            "row_created_to_received": latency_figures(row_to_arrival),
            "received_to_recorded": latency_figures(arrival_to_recorded),
            "publish_to_kafka_ack": latency_figures(ack),
        },
        "idle_cpu_per_s": idle,
        "cpu": cpu,
        "dispatcher_metrics": metrics,
        "dispatcher_log_warnings": errors,
    }
    if profile_path is not None and profile_path.exists():
        result["profile_of_dispatcher_1"] = {"file": str(profile_path), **summarize_profile(profile_path)}
    p = result["publish_to_received"]
    say(
        f"  received {len(latencies)}/{events} (duplicates {seen['duplicates']}): publish -> received p50 "
        f"{p.get('p50_ms', 0):.1f} p90 {p.get('p90_ms', 0):.1f} p99 {p.get('p99_ms', 0):.1f} max "
        f"{p.get('max_ms', 0):.1f} ms"
    )
    for name, values in result["split"].items():
        say(f"    {name:<24} p50 {values.get('p50_ms', 0):7.1f} p99 {values.get('p99_ms', 0):7.1f} ms")
    say(f"  idle CPU s/s before publishing: {idle}")
    say(
        f"  CPU s over {cpu['window_seconds']}s: {cpu['cpu_seconds']} (machine busy {cpu['machine_busy_seconds']} of "
        f"{cpu['machine_capacity_seconds']}, of which other processes {cpu['other_processes_cpu_seconds']})"
    )
    say(f"    postgres by role: {cpu['postgres_cpu_seconds_by_role']}")
    print_profile(result)
    return result


# --- orchestration ----------------------------------------------------------------------------------------------


async def drop_database(admin_url: str, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(plain_dsn(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def measure(ctx: Context, args: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    if "one" in args["phases"]:
        results.append(await throughput_phase(ctx, "one", 1, args))
    if "two" in args["phases"]:
        results.append(await throughput_phase(ctx, "two", 2, args))
    if "latency" in args["phases"]:
        results.append(await latency_phase(ctx, args))
    return results


async def run_all(
    database_url: str, bootstrap: str, engines: dict[str, psutil.Process], args: dict[str, Any], logs: Path
) -> list[dict[str, Any]]:
    await ensure_topics(bootstrap, PARTITIONS)
    receiver = Receiver(free_port())
    receiver.start()
    pool = await asyncpg.create_pool(
        plain_dsn(database_url), min_size=1, max_size=4, server_settings={"application_name": "bench"}
    )
    try:
        ctx = Context(
            database_url=database_url,
            bootstrap=bootstrap,
            receiver=receiver,
            pool=pool,
            tuning=args["tuning"],
            logs=logs,
            engine_processes=engines,
            py_spy=args["py_spy"],
            profile_dir=args["output"].parent,
        )
        ctx.throughput_endpoints, ctx.latency_endpoint = await register_endpoints(
            database_url, receiver.port, args["endpoints"]
        )
        return await measure(ctx, args)
    finally:
        await pool.close()
        receiver.stop()


def parse_tuning(values: list[str]) -> dict[str, str]:
    tuning = dict(BASE_TUNING)
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--set expects NAME=VALUE, got {item!r}")
        tuning[name.strip()] = value.strip()
    return tuning


def main(
    deliveries: int = typer.Option(20_000, min=100, max=200_000, help="Throughput: deliveries per phase."),
    endpoints: int = typer.Option(4, min=1, max=50, help="Throughput: endpoints the deliveries are spread over."),
    warmup: int = typer.Option(500, min=1, max=10_000, help="Throughput: warm-up deliveries before each phase."),
    lead_seconds: float = typer.Option(3.0, min=1.0, max=30.0, help="Rows become due this long after the insert."),
    phase_timeout: float = typer.Option(45.0, min=5.0, max=600.0, help="Give a throughput phase up after this."),
    events: int = typer.Option(500, min=10, max=20_000, help="Latency: render.completed events published."),
    event_rate: float = typer.Option(50.0, "--rate", min=1.0, max=2000.0, help="Latency: events per second."),
    tied_due: bool = typer.Option(False, "--tied-due", help="Throughput: every row due at the same instant."),
    phases: str = typer.Option("one,two,latency", help="Comma-separated subset of one,two,latency."),
    tuning_values: list[str] = typer.Option([], "--set", help="Dispatcher env NAME=VALUE (repeatable)."),
    py_spy_path: str | None = typer.Option(None, "--py-spy", help="py-spy binary: profile dispatcher-1 of each phase."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
    keep_logs: Path | None = typer.Option(None, help="Write the engines' and dispatchers' logs here (kept)."),
) -> None:
    """Measure webhook delivery throughput (one and two dispatchers) and render event -> webhook latency."""
    tuning = parse_tuning(tuning_values)
    args: dict[str, Any] = {
        "deliveries": deliveries,
        "endpoints": endpoints,
        "warmup": warmup,
        "lead_seconds": lead_seconds,
        "phase_timeout": phase_timeout,
        "tied_due": tied_due,
        "events": events,
        "rate": event_rate,
        "phases": {p.strip() for p in phases.split(",") if p.strip()},
        "tuning": tuning,
        "py_spy": py_spy_path,
        "output": output,
    }
    settings = effective_settings(tuning)
    say(f"dispatcher env {tuning}; effective settings {settings}")
    started = time.monotonic()
    external_db = os.environ.get("DATABASE_URL")
    external_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory(prefix="webhook-bench-") as tmp:
        logs = keep_logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        postgres = None if external_db else EmbeddedPostgres(Path(tmp) / "pg", free_port(), logs / "postgres.log")
        kafka = None if external_kafka else EmbeddedKafka(free_port(), logs / "kafka.log")
        engines: dict[str, psutil.Process] = {}
        try:
            if postgres is not None:
                postgres.start()
                assert postgres.proc is not None
                engines["postgres"] = psutil.Process(postgres.proc.pid)
            if kafka is not None:
                kafka.start()
                assert kafka.proc is not None
                engines["kafka"] = psutil.Process(kafka.proc.pid)
            admin_url = external_db or (postgres.url if postgres is not None else "")
            bootstrap = external_kafka or (kafka.bootstrap if kafka is not None else "")
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                database_url = runner.run(create_database(admin_url, f"webhook_bench_{uuid.uuid4().hex[:8]}"))
                try:
                    upgrade(database_url, services=("webhooks",))
                    say(f"engines up and migrated after {time.monotonic() - started:.1f}s")
                    results = runner.run(run_all(database_url, bootstrap, engines, args, logs))
                finally:
                    if external_db:
                        runner.run(drop_database(admin_url, database_url))
        finally:
            if kafka is not None:
                kafka.stop()
            if postgres is not None:
                postgres.stop()
    report(results, args, settings, output, started, bool(external_db), bool(external_kafka))


def code_version() -> dict[str, Any]:
    """The commit measured and the files that differed from it (the dispatcher runs from the work tree)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    dirty = git("status", "--porcelain", "--", "services", "shared").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_in_services_or_shared": dirty}


def report(
    results: list[dict[str, Any]],
    args: dict[str, Any],
    settings: dict[str, Any],
    output: Path,
    started: float,
    external_db: bool,
    external_kafka: bool,
) -> None:
    by_phase = {r["phase"]: r for r in results}
    goals: dict[str, Any] = {}
    say("\nsummary")
    one = by_phase.get("one")
    two = by_phase.get("two")
    if one is not None:
        value = one["receiver"]["deliveries_per_s"]
        goals["one_dispatcher_per_s"] = {"goal": GOAL_ONE_PER_S, "value": value, "met": value >= GOAL_ONE_PER_S}
        say(
            f"  one dispatcher: {value:.0f} deliveries/s (goal >= {GOAL_ONE_PER_S:.0f}) "
            f"{'met' if value >= GOAL_ONE_PER_S else 'NOT met'}"
        )
    if two is not None:
        value = two["receiver"]["deliveries_per_s"]
        say(f"  two dispatchers: {value:.0f} deliveries/s, duplicates {two['receiver']['duplicates']}")
        goals["exactly_once"] = {
            "duplicates": two["receiver"]["duplicates"],
            "attempt_rows": two["table"]["attempt_rows"],
            "succeeded": two["table"]["succeeded"],
            "met": two["receiver"]["duplicates"] == 0
            and two["table"]["attempt_rows"] == two["table"]["succeeded"] + two["table"]["failed"],
        }
        if one is not None and one["receiver"]["deliveries_per_s"]:
            ratio = round(value / one["receiver"]["deliveries_per_s"], 2)
            goals["two_over_one"] = {"goal": GOAL_TWO_RATIO, "value": ratio, "met": ratio >= GOAL_TWO_RATIO}
            say(
                f"  two / one = {ratio:.2f} (goal >= {GOAL_TWO_RATIO}) "
                f"{'met' if ratio >= GOAL_TWO_RATIO else 'NOT met'}"
            )
    latency = by_phase.get("latency")
    if latency is not None:
        p = latency["publish_to_received"]
        p50, p99 = p.get("p50_ms", float("inf")), p.get("p99_ms", float("inf"))
        goals["latency"] = {
            "goal_p50_ms": GOAL_P50_MS,
            "goal_p99_ms": GOAL_P99_MS,
            "p50_ms": p50,
            "p99_ms": p99,
            "met": p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS and latency["missing"] == 0,
        }
        say(
            f"  latency p50 {p50:.1f} ms (goal <= {GOAL_P50_MS:.0f}), p99 {p99:.1f} ms (goal <= {GOAL_P99_MS:.0f}) "
            f"{'met' if goals['latency']['met'] else 'NOT met'}"
        )
    config = {k: (sorted(v) if isinstance(v, set) else str(v) if isinstance(v, Path) else v) for k, v in args.items()}
    write_json(
        output,
        {
            **run_metadata(),
            "code": code_version(),
            "config": config,
            "dispatcher_env": args["tuning"],
            "dispatcher_settings": settings,
            "engines": {
                "postgres": "DATABASE_URL (fresh database)" if external_db else "embedded (pgserver)",
                "postgres_fsync": None if external_db else ("off" if os.environ.get("CI") else "on"),
                "kafka": "KAFKA_BOOTSTRAP_SERVERS" if external_kafka else "embedded Tansu",
            },
            "goals": goals,
            "results": results,
            "wall_seconds": round(time.monotonic() - started, 1),
            "notes": [
                "receiver deliveries_per_s: (requests - 1) / (first -> last arrival) at the receiver process",
                "table deliveries_per_s: (rows - 1) / (first -> last completed_at); completed_at is the recorder "
                "transaction's start; due_to_all_recorded includes the dispatcher noticing the rows (poll) and the "
                "bench's 200 ms polling of the table",
                "cpu: user+system seconds over due -> all recorded (throughput) or the publishing window "
                "(latency); postgres and kafka include all their child processes; 2 cores on this machine",
                "latency: receiver arrival - publish call (time.time() in two processes of one machine); "
                "publish_to_row_created uses the delivery row's created_at (consumer transaction start)",
            ],
        },
    )


if __name__ == "__main__":
    typer.run(main)
