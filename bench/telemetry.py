"""Telemetry: events per second one consumer ingests, and the operator summary's query time over a week.

Starts embedded PostgreSQL and the Tansu broker (``shared.engines``, as ``make run`` does; ``DATABASE_URL`` /
``KAFKA_BOOTSTRAP_SERVERS`` win when set), applies the telemetry migrations and creates the topics.

1. **Ingest**: publishes ``--events`` realistic events (70% ``gateway.request``, 25% ``render.*``, 5% webhook
   outcomes; 6 platforms, 3 versions each, 2,000 users, spread over the last hour) to their topics, then runs the
   product's consumer (``services.telemetry.events.Ingestor``, its default batch size) from offset 0 and times how
   long it takes until every event is in ``events_seen`` (so: fetched, deduped, rolled up, committed).
   Goal ≥ 5,000 events/s.
2. **Summary**: fills one week of per-minute rollups for 6 platforms x 2 versions (renders by status, requests on
   5 routes, latency buckets, active users, webhook outcomes: the shape ingest writes, several million rows) with
   ``generate_series``, then times ``service.summary`` over the whole week and over the last day (median of
   ``--repeats`` runs after one warm-up).

Writes ``bench/results/telemetry.json``. Run: ``.venv/bin/python -m bench.telemetry [--events 100000]``.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import typer
import uvloop

from bench.loadgen import run_metadata, write_json
from bench.stack import RESULTS_DIR, create_database
from services.telemetry import service
from services.telemetry.config import Settings
from services.telemetry.events import Ingestor
from shared.db import make_engine, make_sessionmaker, plain_dsn
from shared.engines import EmbeddedKafka, EmbeddedPostgres, free_port
from shared.events.envelope import CloudEvent
from shared.events.topics import GATEWAY_REQUESTS, RENDER_EVENTS, WEBHOOK_EVENTS
from shared.kafka import ensure_topics, make_producer

RESULTS_FILE = RESULTS_DIR / "telemetry.json"
GOAL_EVENTS_PER_SECOND = 5000
PLATFORMS = ("sketchup", "revit", "autocad", "rhino", "archicad", "blender")
ROUTES = (
    "/api/plugins/renders",
    "/api/plugins/renders/{id}",
    "/api/plugins/credits",
    "/api/plugins/projects",
    "/api/plugins/auth/me",
)


def make_event(rng: random.Random, now: datetime) -> tuple[str, CloudEvent]:
    platform = rng.choice(PLATFORMS)
    version = f"{rng.randint(1, 3)}.0.{rng.randint(0, 2)}"
    user = f"user-{rng.randint(1, 2000)}"
    at = now - timedelta(seconds=rng.uniform(0, 3600))
    roll = rng.random()
    if roll < 0.70:
        status = rng.choice((200, 200, 200, 202, 404, 401))
        data: dict[str, Any] = {
            "requestId": str(uuid.uuid4()),
            "method": "GET",
            "route": rng.choice(ROUTES),
            "status": status,
            "durationMs": rng.lognormvariate(2.5, 0.6),
            "platform": platform,
            "pluginVersion": version,
            "userId": user,
        }
        if status >= 400:
            data["errorCode"] = "NOT_FOUND" if status == 404 else "AUTH_REQUIRED"
        return GATEWAY_REQUESTS, CloudEvent(source="/bench", type="gateway.request", subject=user, time=at, data=data)
    if roll < 0.95:
        state = rng.choice(("created", "processing", "completed", "completed", "failed"))
        render = {
            "renderId": str(uuid.uuid4()),
            "userId": user,
            "status": "pending" if state == "created" else state,
            "platform": platform,
            "pluginVersion": version,
            "quality": "standard",
            "createdAt": (at - timedelta(seconds=rng.uniform(0.1, 5))).isoformat(),
            "processingTime": rng.uniform(2, 30),
            "creditsUsed": 5,
        }
        return RENDER_EVENTS, CloudEvent(
            source="/bench", type=f"render.{state}", subject=render["renderId"], time=at, data=render
        )
    succeeded = rng.random() < 0.9
    delivery = {
        "deliveryId": str(uuid.uuid4()),
        "eventId": str(uuid.uuid4()),
        "eventType": "render.completed",
        "userId": user,
        "attempt": 1,
        "durationMs": 12,
        "latencyMs": rng.randint(20, 400) if succeeded else None,
        "final": succeeded,
    }
    kind = "succeeded" if succeeded else "failed"
    return WEBHOOK_EVENTS, CloudEvent(
        source="/bench", type=f"webhook.delivery.{kind}", subject=user, time=at, data=delivery
    )


async def publish(bootstrap: str, count: int) -> float:
    rng = random.Random(1)
    now = datetime.now(UTC)
    producer = make_producer(bootstrap, client_id="bench-telemetry")
    await producer.start()
    started = time.perf_counter()
    try:
        for _ in range(count):
            topic, event = make_event(rng, now)
            await producer.send(topic, value=event.kafka_value(), key=event.kafka_key(), headers=event.kafka_headers())
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def measure_ingest(database_url: str, bootstrap: str, count: int) -> dict[str, Any]:
    publish_seconds = await publish(bootstrap, count)
    settings = Settings(app_env="dev", database_url=database_url, kafka_bootstrap_servers=bootstrap)
    ingestor = Ingestor(settings)
    pool = await asyncpg.create_pool(plain_dsn(database_url), min_size=1, max_size=1)
    assert pool is not None
    started = time.perf_counter()
    first_seen: float | None = None
    await ingestor.start()
    try:
        while True:
            seen = int(await pool.fetchval("SELECT count(*) FROM telemetry.events_seen"))
            if seen and first_seen is None:
                first_seen = time.perf_counter()
            if seen >= count:
                break
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {seen} of {count} events ingested in 10 minutes")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        await ingestor.stop()
        await pool.close()
    steady = elapsed - ((first_seen or started) - started)
    return {
        "events": count,
        "publish_seconds": round(publish_seconds, 2),
        "ingest_seconds": round(elapsed, 2),
        "events_per_second": round(count / elapsed),
        "events_per_second_after_first_batch": round(count / steady) if steady > 0 else None,
        "batch_size": settings.batch_size,
        "goal_events_per_second": GOAL_EVENTS_PER_SECOND,
    }


FILL_SQL = [
    # renders: every minute, platform, version (2) and status
    """INSERT INTO telemetry.render_minutes
       SELECT m, p, v, s, 1 + (random() * 5)::int, CASE WHEN s = 'completed' THEN 10 ELSE 0 END
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m,
            unnest($3::text[]) p, unnest(ARRAY['1.0.0', '2.0.0']) v,
            unnest(ARRAY['created', 'processing', 'completed', 'failed', 'canceled']) s""",
    # requests: 5 routes, a 200 and a 404 row each
    """INSERT INTO telemetry.request_minutes
       SELECT m, p, v, 'GET', r, st, CASE WHEN st = 404 THEN 'NOT_FOUND' ELSE '' END, 1 + (random() * 20)::int
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m,
            unnest($3::text[]) p, unnest(ARRAY['1.0.0', '2.0.0']) v, unnest($4::text[]) r,
            unnest(ARRAY[200, 404]) st""",
    # render time and queue wait: 5 occupied buckets per platform and version
    """INSERT INTO telemetry.latency_minutes
       SELECT m, k, p, v, b, 1 + (random() * 3)::int
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m,
            unnest(ARRAY['render_time', 'queue_wait']) k, unnest($3::text[]) p, unnest(ARRAY['1.0.0', '2.0.0']) v,
            generate_series(70, 74) b""",
    # route latency: 8 buckets per route
    """INSERT INTO telemetry.latency_minutes
       SELECT m, 'route', 'GET', r, b, 1 + (random() * 5)::int
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m, unnest($4::text[]) r,
            generate_series(20, 27) b""",
    # active users: 3 per platform and version and minute, from a pool of 500 per platform
    """INSERT INTO telemetry.active_users
       SELECT m, p, v, p || '-' || ((extract(epoch FROM m)::bigint / 60 * 7 + u) % 500)
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m,
            unnest($3::text[]) p, unnest(ARRAY['1.0.0', '2.0.0']) v, generate_series(1, 3) u
       ON CONFLICT DO NOTHING""",
    """INSERT INTO telemetry.webhook_minutes
       SELECT m, o, 1 + (random() * 10)::int
       FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') m,
            unnest(ARRAY['succeeded', 'failed']) o""",
    # the hourly rollups ingest writes beside the minutes
    """INSERT INTO telemetry.render_hours
       SELECT date_trunc('hour', minute, 'UTC'), platform, plugin_version, status, sum(renders), sum(credits)
       FROM telemetry.render_minutes GROUP BY 1, 2, 3, 4""",
    """INSERT INTO telemetry.request_hours
       SELECT date_trunc('hour', minute, 'UTC'), platform, plugin_version, method, route, status, error_code,
              sum(requests)
       FROM telemetry.request_minutes GROUP BY 1, 2, 3, 4, 5, 6, 7""",
    """INSERT INTO telemetry.latency_hours
       SELECT date_trunc('hour', minute, 'UTC'), metric, dim1, dim2, bucket, sum(count)
       FROM telemetry.latency_minutes GROUP BY 1, 2, 3, 4, 5""",
    """INSERT INTO telemetry.webhook_hours
       SELECT date_trunc('hour', minute, 'UTC'), outcome, sum(count) FROM telemetry.webhook_minutes GROUP BY 1, 2""",
    """INSERT INTO telemetry.active_users_hours
       SELECT DISTINCT date_trunc('hour', minute, 'UTC'), platform, plugin_version, user_id
       FROM telemetry.active_users""",
]
ROLLUP_TABLES = (
    "render_minutes",
    "request_minutes",
    "latency_minutes",
    "active_users",
    "webhook_minutes",
    "render_hours",
    "request_hours",
    "latency_hours",
    "active_users_hours",
    "webhook_hours",
)


def renumbered(sql: str) -> tuple[str, list[int]]:
    """A statement using some of ``$1..$4`` with its placeholders made consecutive, and which ones it used."""
    used = sorted({int(n) for n in re.findall(r"\$(\d)", sql)})
    return re.sub(r"\$(\d)", lambda m: f"${used.index(int(m.group(1))) + 1}", sql), used


async def measure_summary(database_url: str, repeats: int) -> dict[str, Any]:
    until = datetime.now(UTC).replace(second=0, microsecond=0)
    since = until - timedelta(days=7)
    conn = await asyncpg.connect(plain_dsn(database_url))
    fill_started = time.perf_counter()
    try:
        for table in ROLLUP_TABLES:
            await conn.execute(f"TRUNCATE telemetry.{table}")
        for sql in FILL_SQL:
            args: list[Any] = [since, until - timedelta(minutes=1), list(PLATFORMS), list(ROUTES)]
            numbered, used = renumbered(sql)
            await conn.execute(numbered, *[args[n - 1] for n in used])
        await conn.execute("ANALYZE")
        rows = {table: int(await conn.fetchval(f"SELECT count(*) FROM telemetry.{table}")) for table in ROLLUP_TABLES}
    finally:
        await conn.close()
    fill_seconds = time.perf_counter() - fill_started

    engine = make_engine(database_url, schema="telemetry", pool_size=2)
    sessions = make_sessionmaker(engine)
    timings: dict[str, list[float]] = {"week": [], "day": []}
    try:
        for label, start in (("week", since), ("day", until - timedelta(days=1))):
            for run in range(repeats + 1):
                async with sessions() as session:
                    began = time.perf_counter()
                    await service.summary(session, start, until)
                    if run:  # the first is a warm-up
                        timings[label].append((time.perf_counter() - began) * 1000)
    finally:
        await engine.dispose()
    return {
        "rollup_rows": rows,
        "fill_seconds": round(fill_seconds, 1),
        "platforms": len(PLATFORMS),
        "summary_week_ms": {"median": round(statistics.median(timings["week"]), 1), "runs": timings["week"]},
        "summary_day_ms": {"median": round(statistics.median(timings["day"]), 1), "runs": timings["day"]},
    }


async def prepare_database(server_url: str) -> str:
    """A database of its own on an external server; the embedded one is the bench's alone already."""
    if os.environ.get("DATABASE_URL"):
        return await create_database(server_url, f"telemetry_bench_{uuid.uuid4().hex[:8]}")
    return server_url


def main(
    events: int = typer.Option(100_000, min=1000, max=2_000_000, help="Events to ingest."),
    repeats: int = typer.Option(5, min=1, max=50, help="Timed summary queries per window."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure telemetry ingest throughput and summary query time."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp, ExitStack() as engines:
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            postgres = EmbeddedPostgres(Path(tmp) / "pg", free_port(), Path(tmp) / "postgres.log")
            postgres.start()
            engines.callback(postgres.stop)
            server_url = postgres.url
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            kafka = EmbeddedKafka(free_port(), Path(tmp) / "kafka.log")
            kafka.start()
            engines.callback(kafka.stop)
            bootstrap = kafka.bootstrap
        from shared.migrations import upgrade

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            database_url = runner.run(prepare_database(server_url))
            upgrade(database_url, services=("telemetry",))
            runner.run(ensure_topics(bootstrap, 12))
            ingest = runner.run(measure_ingest(database_url, bootstrap, events))
            print(
                f"ingest: {ingest['events']} events in {ingest['ingest_seconds']} s -> "
                f"{ingest['events_per_second']} events/s (goal >= {GOAL_EVENTS_PER_SECOND}: "
                f"{'met' if ingest['events_per_second'] >= GOAL_EVENTS_PER_SECOND else 'NOT met'})"
            )
            summary = runner.run(measure_summary(database_url, repeats))
            print(
                f"summary over one week ({sum(summary['rollup_rows'].values())} rollup rows): "
                f"median {summary['summary_week_ms']['median']} ms; over one day: "
                f"median {summary['summary_day_ms']['median']} ms"
            )
    write_json(
        output,
        {
            **run_metadata(),
            "ingest": ingest,
            "summary": summary,
            "wall_seconds": round(time.monotonic() - started, 1),
        },
    )


if __name__ == "__main__":
    typer.run(main)
