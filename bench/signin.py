"""Sign-in latency through the gateway, with the product's argon2id parameters.

Starts the whole platform (``bench.stack.running_platform``) with its defaults, except the two sign-in rate limits
raised so they never refuse (one account signing in from one address hundreds of times a minute), signs up one
user, then sends ``POST /api/plugins/auth/signin`` with the right password: ``--requests`` at concurrency 1 and
``--requests`` at ``--concurrency``, split over ``--rounds`` alternating rounds. Each sign-in is: gateway (body
read, two Redis rate-limit checks, forward) -> auth (user lookup, argon2id verify in a worker thread bounded by
``AUTH_MAX_CONCURRENT_HASHES``, refresh-token insert, balance from credits, EdDSA access token, commit).

Reports p50/p90/p99, req/s and CPU per sign-in of gateway/auth/credits/redis, the argon2 parameters (the defaults
of ``services.auth.config.Settings``, checked against the parameters encoded in the stored hash), and one argon2
verify timed alone in this process for comparison. Writes ``bench/results/signin.json``.

Run: ``.venv/bin/python -m bench.signin [--requests 200] [--concurrency 4]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import typer
import uvloop
from pwdlib.hashers.argon2 import Argon2Hasher

from bench.loadgen import (
    PhaseResult,
    Target,
    build_request,
    describe_phase,
    fetch,
    run_metadata,
    run_phase,
    summary_table,
    write_json,
)
from bench.stack import RESULTS_DIR, Platform, environment_report, running_platform, sign_up
from services.auth.config import Settings as AuthSettings

RESULTS_FILE = RESULTS_DIR / "signin.json"
SIGNIN_PATH = "/api/plugins/auth/signin"
OVERRIDES = {
    "GATEWAY_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
    "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
}
ARGON2_FIELDS = ("argon2_time_cost", "argon2_memory_kib", "argon2_parallelism", "max_concurrent_hashes")
PHASE_CAP_SECONDS = 120.0


def argon2_defaults() -> dict[str, Any]:
    fields = AuthSettings.model_fields
    return {name: fields[name].default for name in ARGON2_FIELDS}


def parse_argon2_hash(stored: str) -> dict[str, Any]:
    """``$argon2id$v=19$m=65536,t=3,p=2$salt$hash`` -> the parameters it was made with."""
    match = re.match(r"^\$(argon2\w+)\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$", stored)
    if not match:
        return {"unparsed_prefix": stored[:40]}
    variant, version, m, t, p = match.groups()
    return {
        "variant": variant,
        "version": int(version),
        "memory_kib": int(m),
        "time_cost": int(t),
        "parallelism": int(p),
    }


async def stored_hash(platform: Platform, email: str) -> str:
    conn = await asyncpg.connect(platform.database_dsn)
    try:
        value: str = await conn.fetchval("SELECT password_hash FROM auth.users WHERE email = $1", email.lower())
        return value
    finally:
        await conn.close()


def argon2_alone_ms(password: str, stored: str, repeat: int = 5) -> float:
    """One argon2id verify of the stored hash in this process (the platform idle): the floor of a sign-in."""
    defaults = argon2_defaults()
    hasher = Argon2Hasher(
        time_cost=defaults["argon2_time_cost"],
        memory_cost=defaults["argon2_memory_kib"],
        parallelism=defaults["argon2_parallelism"],
    )
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        if not hasher.verify(password, stored):
            raise RuntimeError("argon2 verify refused the bench password")
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1000, 2)


async def measure(
    platform: Platform, pids: dict[str, int], requests: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        user = await sign_up(client)
    gw = platform.gateway_port
    body = json.dumps({"email": user.email, "password": user.password}).encode()
    target = Target("signin", gw, build_request("POST", SIGNIN_PATH, gw, [("Content-Type", "application/json")], body))
    status, answer = await fetch(gw, target.request)
    if status != 200 or "access_token" not in json.loads(answer):
        raise RuntimeError(f"signin answered {status}: {answer[:300]!r}")
    stored = await stored_hash(platform, user.email)
    alone_ms = await asyncio.to_thread(argon2_alone_ms, user.password, stored)
    print(f"argon2id verify alone (this process, platform idle): {alone_ms:.1f} ms", flush=True)
    # Warm-up: a few sign-ins at each concurrency (connections, pools, code paths), not measured.
    for c in (1, concurrency):
        await run_phase(target, concurrency=c, warmup=0, duration=PHASE_CAP_SECONDS, max_requests=2 * c)
    per_phase = max(1, requests // rounds)
    results: dict[int, list[PhaseResult]] = {1: [], concurrency: []}
    for round_no in range(1, rounds + 1):
        order = (1, concurrency) if round_no % 2 else (concurrency, 1)
        for c in order:
            phase = await run_phase(
                target,
                concurrency=c,
                warmup=0,
                duration=PHASE_CAP_SECONDS,
                max_requests=per_phase,
                round_no=round_no,
                cpu_pids=pids,
            )
            results[c].append(phase)
            print(describe_phase(phase, f"c{c} "), flush=True)
    return {
        "results": results,
        "stored_hash_parameters": parse_argon2_hash(stored),
        "argon2_verify_alone_ms": alone_ms,
    }


def main(
    requests: int = typer.Option(200, min=2, max=5000, help="Measured sign-ins per concurrency level."),
    concurrency: int = typer.Option(4, min=2, max=64, help="Concurrency of the parallel pass."),
    rounds: int = typer.Option(2, min=1, max=10, help="Rounds per level, alternating (ABBA) with the other level."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure sign-in latency and throughput through the gateway."""
    with running_platform(OVERRIDES) as platform, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        pids = platform.pids()
        background = platform.background_cpu(pids)
        measured = runner.run(measure(platform, pids, requests, concurrency, rounds))
    defaults = argon2_defaults()
    stored = measured["stored_hash_parameters"]
    matches = (
        stored.get("time_cost") == defaults["argon2_time_cost"]
        and stored.get("memory_kib") == defaults["argon2_memory_kib"]
        and stored.get("parallelism") == defaults["argon2_parallelism"]
    )
    print()
    print("sign-in through the gateway, median of rounds")
    print(
        f"argon2id in effect: t={defaults['argon2_time_cost']} m={defaults['argon2_memory_kib']} KiB "
        f"p={defaults['argon2_parallelism']}, max {defaults['max_concurrent_hashes']} concurrent hashes "
        f"(Settings defaults; platform started with defaults; stored hash {stored}: "
        f"{'matches' if matches else 'DIFFERS'})"
    )
    by_level = {f"c{c}": phases for c, phases in measured["results"].items()}
    summaries = summary_table("level", by_level, background["per_process"], operation="sign-in")
    levels = {name: {"concurrency": int(name[1:]), **s} for name, s in summaries.items()}
    print(f"argon2id verify alone: {measured['argon2_verify_alone_ms']:.1f} ms")
    write_json(
        output,
        {
            **run_metadata(),
            "path": SIGNIN_PATH,
            "config": {"requests_per_level": requests, "concurrency": concurrency, "rounds": rounds},
            "platform": environment_report(platform),
            "idle_platform_cpu": background,
            "argon2": {
                "source": "services.auth.config.Settings defaults (the platform was started with defaults)",
                **defaults,
                "stored_hash_parameters": stored,
                "stored_hash_matches_defaults": matches,
                "verify_alone_ms": measured["argon2_verify_alone_ms"],
            },
            "levels": levels,
        },
    )


if __name__ == "__main__":
    typer.run(main)
