"""Other users' latency while one account floods the gateway with slow bodies (the attack of issue #13).

Starts the whole platform (``bench.stack.running_platform``) with its defaults, except the per-minute rate limits
raised so they never refuse (they are not what is measured). Signs up one attacker and ``--victims`` users (with
credits). Each victim is a plugin on its own API key; the victims' requests are ``GET /api/plugins/credits`` and
``POST /api/plugins/projects`` (a small JSON body, so it crosses the same body path as the attack), at
``--concurrency`` connections per target.

Two phases per round, alternating (ABBA) over ``--rounds``: the victims alone (baseline), and the victims while the
attacker keeps ``--connections`` requests open, each sending its body one byte every 0.5 s (the bodies: chunked
``POST /keys``, ``POST /renders`` declaring 1 MiB, ``POST /projects`` declaring 50 kB: each under its cap),
reopening each as soon as the gateway answers it. Reports for each phase the victims' p50/p90/p99, errors (any
non-2xx, a broken connection, or no answer within 10 s), req/s and CPU ms per victim request per process (net of
the idle platform), and the attacker's answers by status.
Writes ``bench/results/slow_body_flood.json``.

Run: ``.venv/bin/python -m bench.slow_body_flood [--connections 500] [--seconds 15]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import typer
import uvloop

from bench.loadgen import (
    PhaseResult,
    Target,
    build_request,
    describe_phase,
    run_metadata,
    run_phase,
    summary_table,
    write_json,
)
from bench.stack import (
    RESULTS_DIR,
    BenchUser,
    Platform,
    create_api_key,
    environment_report,
    grant_credits,
    running_platform,
    sign_up,
)
from shared.testing.attacks import request_head, trickle

RESULTS_FILE = RESULTS_DIR / "slow_body_flood.json"
REQUEST_TIMEOUT_SECONDS = 10.0  # a victim's request unanswered this long counts as an error (the attack's aim)
OVERRIDES = {
    "GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000",
    "GATEWAY_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
    "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
}


def attack_heads(attacker: BenchUser) -> list[tuple[bytes, bool]]:
    auth = {"Authorization": f"Bearer {attacker.access_token}", "Content-Type": "application/json"}
    return [
        (request_head("POST", "/api/plugins/keys", {**auth, "Transfer-Encoding": "chunked"}), True),
        (request_head("POST", "/api/plugins/renders", {**auth, "Content-Length": str(1024 * 1024)}), False),
        (request_head("POST", "/api/plugins/projects", {**auth, "Content-Length": "50000"}), False),
    ]


async def attack(
    platform: Platform, heads: list[tuple[bytes, bool]], connections: int, stop: asyncio.Event
) -> Counter[str]:
    """Keep ``connections`` slow requests open until ``stop``; count the gateway's answers."""
    answers: Counter[str] = Counter()
    address = ("127.0.0.1", platform.gateway_port)

    async def one(index: int) -> None:
        while not stop.is_set():
            head, chunked = heads[index % len(heads)]
            try:
                answer = await trickle(address, head, chunked=chunked, give_up_after=60)
            except OSError as exc:
                answers[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            answers[str(answer.status)] += 1

    tasks = [asyncio.create_task(one(i)) for i in range(connections)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return answers


async def victims_targets(platform: Platform, client: httpx.AsyncClient, count: int) -> list[Target]:
    port = platform.gateway_port
    targets = []
    for index in range(count):
        victim = await sign_up(client)
        grant_credits(platform, victim.email, 1000)
        key = await create_api_key(client, victim, name=f"victim-{index}")
        headers = [("X-Api-Key", key), ("X-Plugin-Platform", "sketchup")]
        targets.append(Target(f"credits-{index}", port, build_request("GET", "/api/plugins/credits", port, headers)))
        body = json.dumps({"name": f"p-{uuid.uuid4().hex[:8]}"}).encode()
        project = build_request(
            "POST", "/api/plugins/projects", port, [*headers, ("Content-Type", "application/json")], body
        )
        targets.append(Target(f"project-{index}", port, project))
    return targets


async def victims_phase(
    targets: list[Target], concurrency: int, seconds: float, round_no: int, pids: dict[str, int]
) -> PhaseResult:
    """All victims' targets at once; merged into one phase (latencies, errors, CPU of the window)."""
    phases = await asyncio.gather(
        *(
            run_phase(
                t,
                concurrency=concurrency,
                warmup=1.0,
                duration=seconds,
                round_no=round_no,
                cpu_pids=pids if i == 0 else None,
                ok_status=201 if t.name.startswith("project") else 200,
                request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            for i, t in enumerate(targets)
        )
    )
    merged = PhaseResult("victims", round_no)
    for phase in phases:
        merged.latencies += phase.latencies
        merged.errors += phase.errors
        for status, n in phase.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + n
    merged.seconds = max(p.seconds for p in phases)
    merged.cpu_seconds = phases[0].cpu_seconds
    merged.cpu_window_seconds = phases[0].cpu_window_seconds
    return merged


async def measure(
    platform: Platform,
    pids: dict[str, int],
    victims: int,
    concurrency: int,
    connections: int,
    seconds: float,
    rounds: int,
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        attacker = await sign_up(client)
        targets = await victims_targets(platform, client, victims)
    heads = attack_heads(attacker)
    results: dict[str, list[PhaseResult]] = {"baseline": [], "flood": []}
    attacker_answers: Counter[str] = Counter()
    for round_no in range(1, rounds + 1):
        order = ("baseline", "flood") if round_no % 2 else ("flood", "baseline")
        for name in order:
            stop = asyncio.Event()
            flooding = asyncio.create_task(attack(platform, heads, connections, stop)) if name == "flood" else None
            if flooding is not None:
                await asyncio.sleep(2.0)  # every slow connection open before the victims' window starts
            started = time.monotonic()
            phase = await victims_phase(targets, concurrency, seconds, round_no, pids)
            stop.set()
            if flooding is not None:
                attacker_answers += await flooding
            results[name].append(phase)
            print(describe_phase(phase, f"{name:<9}"), f"({time.monotonic() - started:.1f} s)", flush=True)
            await asyncio.sleep(1.0)
    return {"results": results, "attacker_answers": dict(attacker_answers)}


def main(
    connections: int = typer.Option(500, min=1, max=5000, help="Slow requests the attacker keeps open."),
    victims: int = typer.Option(4, min=1, max=50, help="Other users, each with its own API key."),
    concurrency: int = typer.Option(2, min=1, max=32, help="Connections per victim target."),
    seconds: float = typer.Option(15.0, min=2, max=300, help="Measured seconds per phase."),
    rounds: int = typer.Option(2, min=1, max=10, help="Rounds, alternating baseline and flood (ABBA)."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure other users' latency and errors while one account floods the gateway with slow bodies."""
    with running_platform(OVERRIDES) as platform, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        pids = platform.pids()
        background = platform.background_cpu(pids)
        measured = runner.run(measure(platform, pids, victims, concurrency, connections, seconds, rounds))
    print()
    print(f"victims' requests, median of rounds ({connections} slow attacker connections in the flood phase)")
    phases = summary_table("phase", measured["results"], background["per_process"])
    print(f"attacker's answers: {measured['attacker_answers']}")
    write_json(
        output,
        {
            **run_metadata(),
            "config": {
                "connections": connections,
                "victims": victims,
                "concurrency_per_target": concurrency,
                "seconds": seconds,
                "rounds": rounds,
                "overrides": OVERRIDES,
            },
            "platform": environment_report(platform),
            "idle_platform_cpu": background,
            "phases": phases,
            "attacker_answers": measured["attacker_answers"],
        },
    )


if __name__ == "__main__":
    typer.run(main)
