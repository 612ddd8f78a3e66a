"""Render create through the gateway: ``POST /api/plugins/renders`` with a ~100 KB PNG and an API key.

Starts the whole platform (``bench.stack.running_platform``: embedded engines, every process, rate limits raised so
they never refuse), signs up ``--users`` accounts (one API key each, credits granted with the operator CLI), makes a
deterministic ~100 KB PNG in memory (``bench.images.png_near``: 1280x720 gradient + boxes + speckle noise; its exact
size is reported) and sends it as a JSON body (base64 ``uploadedImageData``) and, unless ``--no-multipart``, as a
multipart file part, at ``--concurrency`` keep-alive connections (closed loop) for ``--duration`` seconds per phase.

Each create is: gateway (API key from cache, Redis rate-limit check, identity signing, body streamed upstream) ->
renders API (body parsed and base64-decoded, the PNG fully decoded in a thread, render + 2 outbox rows inserted,
input written to local storage, credits reserved over HTTP (credits locks the account's balance row), the
estimated time queried, commit) -> 202.

Every create queues a real render, and the render worker renders that backlog while the load runs, competing for
the same 2 cores. So every measurement is taken twice, in alternating phases:

- ``worker_running``: the platform as it is (the worker renders the growing backlog, a Pillow process at full tilt);
- ``worker_paused``: the render worker and its render pool SIGSTOPped for the phase (SIGCONT afterwards), so the
  create path is measured alone (relays, Kafka, the rest of the platform still run).

Reports req/s and p50/p90/p99 of the 202 answers (median over rounds, and pooled), CPU milliseconds per create of
each platform process group, the backlog, and the goals (>= 300 req/s, p99 <= 50 ms). Writes
``bench/results/render_create.json``.

Run: ``.venv/bin/python -m bench.render_create [--concurrency 16] [--duration 8] [--rounds 2] [--users 1]``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import typer
import uvloop
from PIL import Image

from bench.images import SyntheticPng, png_near
from bench.loadgen import (
    PhaseResult,
    Target,
    build_request,
    describe_phase,
    fetch,
    ms,
    run_metadata,
    run_phase,
    summarize,
    write_json,
)
from bench.stack import (
    RESULTS_DIR,
    Platform,
    cpu_delta,
    create_api_key,
    environment_report,
    grant_credits,
    machine_busy_seconds,
    paused,
    process_cpu_seconds,
    running_platform,
    sign_up,
)
from services.renders.rendering import validate_upload

RESULTS_FILE = RESULTS_DIR / "render_create.json"
RENDERS_PATH = "/api/plugins/renders"
OVERRIDES = {
    "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000",
    "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
    "GATEWAY_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
}
GRANT = 1_000_000  # credits' per-grant maximum: 200,000 standard renders per account
GOALS = {"throughput_rps_min": 300.0, "p99_ms_max": 50.0}
BOUNDARY = "----platform-bench-7MA4YWxkTrZu0gW"
CPU_GROUPS = ("gateway", "renders-api", "credits", "postgres", "kafka", "redis", "render-worker", "auth")
ESTIMATE_SQL = (
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY processing_time) FROM ("
    "SELECT processing_time FROM renders.renders WHERE status = 'completed' AND quality = $1 "
    "ORDER BY completed_at DESC LIMIT 50) recent"
)


# --- requests ---------------------------------------------------------------------------------------------------


def form_fields(quality: str) -> dict[str, str]:
    return {"uploadedImageType": "image/png", "quality": quality, "aspectRatio": "16:9", "style": "photorealistic"}


def json_body(image: bytes, quality: str) -> bytes:
    return json.dumps({"uploadedImageData": base64.b64encode(image).decode(), **form_fields(quality)}).encode()


def multipart_body(image: bytes, quality: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in form_fields(quality).items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="uploadedImageData"; filename="viewport.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def create_request(port: int, key: str, body: bytes, content_type: str) -> bytes:
    return build_request("POST", RENDERS_PATH, port, [("X-Api-Key", key), ("Content-Type", content_type)], body)


def make_targets(platform: Platform, keys: list[str], image: bytes, quality: str, multipart: bool) -> list[Target]:
    gw = platform.gateway_port
    bodies = {"json": (json_body(image, quality), "application/json")}
    if multipart:
        bodies["multipart"] = (multipart_body(image, quality), f"multipart/form-data; boundary={BOUNDARY}")
    targets = []
    for name, (body, content_type) in bodies.items():
        requests = tuple(create_request(gw, key, body, content_type) for key in keys)
        targets.append(Target(name, gw, requests[0], requests if len(requests) > 1 else ()))
    return targets


async def preflight(platform: Platform, targets: list[Target], key: str, cost: int) -> dict[str, Any]:
    """Each body is accepted (202, pending, the cost of the quality) and the render is readable afterwards."""
    seen: dict[str, Any] = {}
    for target in targets:
        status, body = await fetch(target.port, target.request)
        answer = json.loads(body) if body else {}
        data = answer.get("data") or {}
        if status != 202 or data.get("status") != "pending" or data.get("creditsCost") != cost:
            raise RuntimeError(f"{target.name}: create answered {status} {body[:300]!r}")
        seen[target.name] = data
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=10) as client:
        render_id = seen[targets[0].name]["renderId"]
        response = await client.get(f"{RENDERS_PATH}/{render_id}", headers={"X-Api-Key": key})
        if response.status_code != 200 or response.json()["data"]["renderId"] != render_id:
            raise RuntimeError(f"GET render answered {response.status_code}: {response.text[:300]}")
    return seen


# --- measuring --------------------------------------------------------------------------------------------------


async def render_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM renders.renders GROUP BY status")
        return {row["status"]: int(row["n"]) for row in rows}
    finally:
        await conn.close()


async def estimate_query_ms(dsn: str, quality: str, repeat: int = 20) -> dict[str, Any]:
    """The estimated-time query every create runs (``service.estimated_seconds``), timed alone at the end, with
    the table as the run left it, and its plan."""
    conn = await asyncpg.connect(dsn)
    try:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            await conn.fetchval(ESTIMATE_SQL, quality)
            samples.append(time.perf_counter() - t0)
        plan = await conn.fetch("EXPLAIN " + ESTIMATE_SQL, quality)
        rows = await conn.fetchval("SELECT count(*) FROM renders.renders")
        return {
            "renders_rows": int(rows),
            "median_ms": ms(statistics.median(samples)),
            "plan": [r[0] for r in plan],
        }
    finally:
        await conn.close()


async def measured_phase(
    target: Target,
    platform: Platform,
    *,
    variant: str,
    concurrency: int,
    round_warmup: float,
    duration: float,
    round_no: int,
) -> tuple[PhaseResult, dict[str, Any]]:
    """One phase, with CPU of every process group over its measured window and the backlog before and after."""
    counts_before = await render_counts(platform.database_dsn)
    groups: dict[str, list[psutil.Process]] = {}

    async def cpu_window() -> tuple[float, dict[tuple[str, int], float], float, int]:
        await asyncio.sleep(round_warmup)
        # Taken at the window's start: the connection pools (and postgres backends) have grown by then.
        groups.update(platform.process_groups())
        return time.perf_counter(), process_cpu_seconds(groups), machine_busy_seconds(), await db_sessions(platform)

    window = asyncio.create_task(cpu_window())
    client_before = time.process_time()
    phase = await run_phase(
        target,
        concurrency=concurrency,
        warmup=round_warmup,
        duration=duration,
        round_no=round_no,
        ok_status=202,
    )
    finished = time.perf_counter()
    after = process_cpu_seconds(groups)
    machine_after = machine_busy_seconds()
    client_cpu = time.process_time() - client_before
    sessions_after = await db_sessions(platform)
    started, before, machine_before, sessions_before = await window
    phase.target = f"{variant}/{target.name}"
    phase.cpu_window_seconds = finished - started
    phase.cpu_seconds = cpu_delta(before, after)
    phase.cpu_seconds["client"] = client_cpu * duration / (round_warmup + duration)
    counts_after = await render_counts(platform.database_dsn)
    machine_cores = (machine_after - machine_before) / phase.cpu_window_seconds
    platform_cores = sum(v for k, v in phase.cpu_seconds.items() if k != "client") / phase.cpu_window_seconds
    return phase, {
        "renders_before": counts_before,
        "renders_after": counts_after,
        "machine_busy_cores": round(machine_cores, 2),
        "platform_busy_cores": round(platform_cores, 2),
        "other_busy_cores": round(machine_cores - platform_cores - phase.cpu_seconds["client"] / duration, 2),
        "new_db_sessions": sessions_after - sessions_before,
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


async def db_sessions(platform: Platform) -> int:
    """Sessions ever opened on the platform's database (pg_stat_database.sessions): connection churn."""
    conn = await asyncpg.connect(platform.database_dsn)
    try:
        value = await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(value) - 1  # this very connection
    finally:
        await conn.close()


async def benchmark(
    platform: Platform,
    targets: list[Target],
    *,
    concurrency: int,
    warmup: float,
    round_warmup: float,
    duration: float,
    rounds: int,
) -> tuple[dict[str, list[PhaseResult]], dict[str, list[dict[str, Any]]]]:
    for target in targets:
        print(f"warm-up {target.name} {warmup:.1f}s (worker running)", flush=True)
        await run_phase(target, concurrency=concurrency, warmup=warmup, duration=0.0, ok_status=202)
    plan = [(variant, target) for target in targets for variant in ("worker_paused", "worker_running")]
    results: dict[str, list[PhaseResult]] = {}
    context: dict[str, list[dict[str, Any]]] = {}
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(plan)
        for variant, target in plan[shift:] + plan[:shift]:
            common: dict[str, Any] = {
                "variant": variant,
                "concurrency": concurrency,
                "round_warmup": round_warmup,
                "duration": duration,
                "round_no": round_no,
            }
            if variant == "worker_paused":
                # The tree is taken now: the render pool process is started lazily, at the first render.
                with paused(platform.service_tree("render-worker")):
                    phase, extra = await measured_phase(target, platform, **common)
            else:
                phase, extra = await measured_phase(target, platform, **common)
            results.setdefault(phase.target, []).append(phase)
            context.setdefault(phase.target, []).append({"round": round_no, "statuses": phase.statuses, **extra})
            done = extra["renders_after"].get("completed", 0) - extra["renders_before"].get("completed", 0)
            backlog = extra["renders_after"].get("pending", 0)
            print(
                f"{describe_phase(phase)}  [renders done {done}, pending {backlog}; cores busy: platform "
                f"{extra['platform_busy_cores']}, machine {extra['machine_busy_cores']}, other "
                f"{extra['other_busy_cores']}; new db sessions {extra['new_db_sessions']}]",
                flush=True,
            )
    return results, context


# --- reporting --------------------------------------------------------------------------------------------------


def cpu_per_create(phases: list[PhaseResult]) -> dict[str, float]:
    """CPU milliseconds per accepted create of each process group over the measured windows (not net of idle)."""
    requests = sum(len(p.latencies) + p.errors for p in phases)
    totals: dict[str, float] = {}
    for phase in phases:
        for name, value in phase.cpu_seconds.items():
            totals[name] = totals.get(name, 0.0) + value
    ordered = [n for n in (*CPU_GROUPS, "client") if n in totals] + sorted(
        n for n in totals if n not in CPU_GROUPS and n != "client"
    )
    per = {name: round(totals[name] / requests * 1000, 3) if requests else float("nan") for name in ordered}
    platform_total = sum(v for k, v in totals.items() if k != "client")
    per["platform_total"] = round(platform_total / requests * 1000, 3) if requests else float("nan")
    seconds = sum(p.cpu_window_seconds for p in phases)
    per["platform_cores_busy"] = round(platform_total / seconds, 2) if seconds else float("nan")
    # What 2 cores given to the platform alone could sustain at this CPU cost (client and other work excluded).
    per["capacity_rps_on_2_dedicated_cores"] = round(2000 / per["platform_total"], 1) if platform_total else 0.0
    return per


def upload_check_costs(image: bytes, repeat: int = 15) -> dict[str, float]:
    """The upload check every create runs (``validate_upload``: a full decode) timed alone in this process, next to
    a header + chunk-CRC check (``Image.verify``) that decodes no pixel, for comparison."""

    def median_ms(fn: Any) -> float:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return ms(statistics.median(samples))

    def verify_only() -> None:
        with Image.open(io.BytesIO(image), formats=["PNG"]) as opened:
            opened.verify()

    encoded = base64.b64encode(image)
    return {
        "validate_upload_ms": median_ms(lambda: validate_upload(image, "image/png")),
        "png_header_and_crc_verify_ms": median_ms(verify_only),
        "base64_decode_ms": median_ms(lambda: base64.b64decode(encoded, validate=True)),
    }


def verdict(summary: dict[str, Any]) -> dict[str, Any]:
    m = summary["median_of_rounds"]
    return {
        "throughput_ok": m["throughput_rps"] >= GOALS["throughput_rps_min"],
        "p99_ok": m["p99_ms"] <= GOALS["p99_ms_max"],
    }


def main(
    concurrency: int = typer.Option(16, min=1, max=256, help="Concurrent keep-alive connections (closed loop)."),
    duration: float = typer.Option(8.0, min=1.0, max=60.0, help="Measured seconds per phase."),
    rounds: int = typer.Option(2, min=1, max=6, help="Rounds; each measures every body x worker state once."),
    warmup: float = typer.Option(2.0, min=0.0, max=30.0, help="Unmeasured seconds per body before the rounds."),
    round_warmup: float = typer.Option(0.5, min=0.0, max=10.0, help="Unmeasured seconds at the start of a phase."),
    users: int = typer.Option(1, min=1, max=64, help="Accounts (one API key each), spread over the connections."),
    quality: str = typer.Option("standard", help="Render quality of the creates (standard costs 5 credits)."),
    target_bytes: int = typer.Option(100_000, min=10_000, max=5_000_000, help="PNG size to aim for."),
    multipart: bool = typer.Option(True, help="Also measure the multipart (file part) body."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure render create (202) throughput and latency through the gateway, worker running and paused."""
    if quality not in ("standard", "high", "ultra"):
        raise typer.BadParameter("quality must be standard, high or ultra")
    started = time.monotonic()
    image = png_near(target_bytes)
    print(f"input PNG: {image.describe()}", flush=True)
    check_costs = upload_check_costs(image.data)
    print(f"in this process, platform not started: {check_costs}", flush=True)
    config: dict[str, Any] = {
        "concurrency": concurrency,
        "duration": duration,
        "rounds": rounds,
        "warmup": warmup,
        "round_warmup": round_warmup,
        "users": users,
        "quality": quality,
    }
    with running_platform(OVERRIDES) as platform, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        keys, emails = runner.run(accounts(platform, users))
        balances = [grant_credits(platform, email, GRANT, reference=f"bench-render-create:{email}") for email in emails]
        print(f"{users} account(s), API keys, balance {balances[0]} credits each", flush=True)
        cost = {"standard": 5, "high": 10, "ultra": 15}[quality]
        targets = make_targets(platform, keys, image.data, quality, multipart)
        bodies = {t.name: len(t.request) for t in targets}
        print(f"request sizes (bytes, headers included): {bodies}", flush=True)
        accepted = runner.run(preflight(platform, targets, keys[0], cost))
        results, context = runner.run(
            benchmark(
                platform,
                targets,
                concurrency=concurrency,
                warmup=warmup,
                round_warmup=round_warmup,
                duration=duration,
                rounds=rounds,
            )
        )
        estimate = runner.run(estimate_query_ms(platform.database_dsn, quality))
        final_counts = runner.run(render_counts(platform.database_dsn))
    extras = {"estimate_query_at_end": estimate, "renders_at_end": final_counts, "upload_check_alone": check_costs}
    report(image, platform, config, bodies, accepted, results, context, extras, output, started)


async def accounts(platform: Platform, count: int) -> tuple[list[str], list[str]]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        keys, emails = [], []
        for _ in range(count):
            user = await sign_up(client)
            keys.append(await create_api_key(client, user, name="render-create-bench"))
            emails.append(user.email)
    return keys, emails


def report(
    image: SyntheticPng,
    platform: Platform,
    config: dict[str, Any],
    bodies: dict[str, int],
    accepted: dict[str, Any],
    results: dict[str, list[PhaseResult]],
    context: dict[str, list[dict[str, Any]]],
    extras: dict[str, Any],
    output: Path,
    started: float,
) -> None:
    estimate, final_counts = extras["estimate_query_at_end"], extras["renders_at_end"]
    print(
        f"\nrender create through the gateway, c{config['concurrency']}, {config['users']} account(s), "
        f"PNG {len(image.data)} bytes ({image.width}x{image.height}); median over {config['rounds']} rounds"
    )
    print(
        f"{'variant':<26}{'requests':>9}{'errors':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'req/s':>8}"
    )
    variants: dict[str, Any] = {}
    for name in sorted(results):
        phases = results[name]
        s = summarize(phases)
        s.pop("cpu_ms_per_request", None)
        s.pop("cpu_ms_per_request_raw", None)
        s.pop("cpu_net_of_idle", None)
        m = s["median_of_rounds"]
        print(
            f"{name:<26}{s['requests']:>9}{s['errors']:>7}{m['p50_ms']:>9.1f}{m['p90_ms']:>9.1f}{m['p99_ms']:>9.1f}"
            f"{s['pooled']['max_ms']:>9.1f}{m['throughput_rps']:>8.1f}"
        )
        variants[name] = {
            **s,
            "goals_met": verdict(s),
            "cpu_ms_per_create": cpu_per_create(phases),
            "other_work_busy_cores_median": statistics.median(c["other_busy_cores"] for c in context[name]),
            "new_db_sessions_per_create": round(
                sum(c["new_db_sessions"] for c in context[name]) / max(1, s["requests"] + s["errors"]), 3
            ),
            "phases": context[name],
        }
    print("\nCPU ms per create by process group (measured windows, not net of idle):")
    for name, v in variants.items():
        cpu = v["cpu_ms_per_create"]
        skip = ("platform_cores_busy", "capacity_rps_on_2_dedicated_cores")
        line = ", ".join(f"{k} {val:.2f}" for k, val in cpu.items() if k not in skip and val >= 0.05)
        print(
            f"  {name:<24} {line}\n  {'':<24} platform busy {cpu['platform_cores_busy']:.2f} cores, other work on "
            f"the machine {v['other_work_busy_cores_median']:.2f} cores; at this CPU cost 2 dedicated cores would "
            f"sustain ~{cpu['capacity_rps_on_2_dedicated_cores']:.0f} creates/s; new DB sessions per create "
            f"{v['new_db_sessions_per_create']}"
        )
    print(f"\ngoals: >= {GOALS['throughput_rps_min']:.0f} req/s and p99 <= {GOALS['p99_ms_max']:.0f} ms")
    for name, v in variants.items():
        ok = v["goals_met"]
        print(
            f"  {name:<24} throughput {'met' if ok['throughput_ok'] else 'NOT met'}, "
            f"p99 {'met' if ok['p99_ok'] else 'NOT met'}"
        )
    print(
        f"estimated-time query alone at the end ({estimate['renders_rows']} renders rows): "
        f"{estimate['median_ms']:.2f} ms; plan: {' | '.join(line.strip() for line in estimate['plan'][:4])}"
    )
    print(f"renders at the end: {final_counts}")
    write_json(
        output,
        {
            **run_metadata(),
            "path": RENDERS_PATH,
            "input_png": image.describe(),
            "request_bytes": bodies,
            "config": config,
            "goals": GOALS,
            "platform": environment_report(platform),
            "preflight_answers": accepted,
            "variants": variants,
            **extras,
            "wall_seconds": round(time.monotonic() - started, 1),
            "notes": [
                "worker_running: the render worker renders the backlog the creates build, on the same 2 cores",
                "worker_paused: render worker and its render pool SIGSTOPped for the phase, SIGCONT after",
                "the percentile columns are over 202 answers only; errors counts every other answer",
            ],
        },
    )


if __name__ == "__main__":
    typer.run(main)
