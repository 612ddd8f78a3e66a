"""What the gateway adds to a request: the same GET direct to a trivial upstream, and through the gateway with a
Bearer JWT and with an API key.

Starts ``bench.trivial_upstream`` on a free port and the whole platform (``bench.stack.running_platform``: embedded
engines, every process, the gateway's credits route pointed at the trivial upstream, rate limits raised so they never
refuse), signs up a user and creates an API key through the gateway, then measures ``GET /api/plugins/credits/ping``
three ways:

- ``direct``: to the upstream with a pre-signed internal identity (the one the gateway would forward);
- ``jwt``: through the gateway with ``Authorization: Bearer <access token>`` (EdDSA check against cached JWKS);
- ``api_key``: through the gateway with ``X-Api-Key`` (checksum, then the gateway's key cache: auth is asked once).

Both gateway modes also pay the Redis rate-limit round trip and the identity signing. Each pass warms every mode up,
then alternates measured phases over rounds (the order rotates); a pass runs at ``--concurrency`` and, unless
``--no-serial``, a second one at concurrency 1 (on a 2-core box the added latency is best read there: at higher
concurrency client, gateway, upstream and Redis queue for the same two cores). Headline figures are medians over
rounds; pooled figures and CPU time per request of each process are in ``bench/results/gateway_overhead.json``.

Run: ``.venv/bin/python -m bench.gateway_overhead [--concurrency 16] [--duration 4] [--rounds 3]``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import typer
import uvloop

from bench.loadgen import (
    USER_AGENT,
    PhaseResult,
    Target,
    added_latency,
    build_request,
    fetch,
    run_alternating,
    run_metadata,
    summarize,
    write_json,
)
from bench.stack import (
    RESULTS_DIR,
    Platform,
    child_process,
    create_api_key,
    environment_report,
    gateway_identity_key,
    running_platform,
    sign_up,
)
from bench.trivial_upstream import PING_PATH
from shared.apikeys import SCOPES
from shared.engines import free_port
from shared.identity import IDENTITY_HEADER, Identity, sign_identity

RESULTS_FILE = RESULTS_DIR / "gateway_overhead.json"
EXPECTED_BODY = {"success": True, "data": {"pong": True}}
MODES = ("direct", "jwt", "api_key")
GATEWAY_MODES = ("jwt", "api_key")


def platform_overrides(upstream_port: int) -> dict[str, str]:
    return {
        "GATEWAY_CREDITS_URL": f"http://127.0.0.1:{upstream_port}",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000",
        "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
    }


async def make_targets(platform: Platform, upstream_port: int) -> list[Target]:
    """Sign up, create a key, and build the three requests (the direct one carries what the gateway would sign)."""
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        user = await sign_up(client)
        key = await create_api_key(client, user)
    identity = Identity(
        user_id=user.user_id,
        auth_method="bearer",
        scopes=list(SCOPES),
        platform="unknown",
        user_agent=USER_AGENT,
        request_id=uuid.uuid4().hex,
    )
    token = sign_identity(identity, gateway_identity_key(), ttl_seconds=3600)
    gw = platform.gateway_port
    return [
        Target("direct", upstream_port, build_request("GET", PING_PATH, upstream_port, [(IDENTITY_HEADER, token)])),
        Target("jwt", gw, build_request("GET", PING_PATH, gw, [("Authorization", f"Bearer {user.access_token}")])),
        Target("api_key", gw, build_request("GET", PING_PATH, gw, [("X-Api-Key", key)])),
    ]


async def preflight(targets: list[Target], upstream_port: int, gateway_port: int) -> None:
    """Every mode answers 200 with the expected body; without credentials both the upstream and gateway say 401."""
    for target in targets:
        status, body = await fetch(target.port, target.request)
        if status != 200 or json.loads(body) != EXPECTED_BODY:
            raise RuntimeError(f"{target.name}: unexpected answer {status} {body[:200]!r}")
    for name, port in (("upstream", upstream_port), ("gateway", gateway_port)):
        status, _ = await fetch(port, build_request("GET", PING_PATH, port))
        if status != 401:
            raise RuntimeError(f"{name} answered {status} without credentials; expected 401")


async def benchmark(
    platform: Platform, upstream_port: int, pids: dict[str, int], concurrencies: list[int], **phase: Any
) -> dict[int, dict[str, list[PhaseResult]]]:
    targets = await make_targets(platform, upstream_port)
    await preflight(targets, upstream_port, platform.gateway_port)
    passes: dict[int, dict[str, list[PhaseResult]]] = {}
    for concurrency in concurrencies:
        print(f"--- concurrency {concurrency}", flush=True)
        passes[concurrency] = await run_alternating(
            targets, concurrency=concurrency, cpu_pids=pids, label=f"c{concurrency} ", **phase
        )
    return passes


def main(
    concurrency: int = typer.Option(16, min=1, max=512, help="Concurrent keep-alive connections (closed loop)."),
    serial: bool = typer.Option(True, help="Also run a concurrency-1 pass (the cleanest added-latency figure)."),
    duration: float = typer.Option(4.0, min=0.5, max=30.0, help="Measured seconds per phase."),
    requests: int | None = typer.Option(
        None, min=1, help="Measured requests per phase instead (still capped at --duration seconds)."
    ),
    rounds: int = typer.Option(3, min=1, max=10, help="Measured phases per mode and pass, order rotating."),
    warmup: float = typer.Option(1.5, min=0.0, max=30.0, help="Warm-up seconds per mode at the start of a pass."),
    round_warmup: float = typer.Option(0.5, min=0.0, max=10.0, help="Unmeasured seconds at the start of each phase."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure the latency and throughput the gateway adds (JWT and API key) in front of a trivial service."""
    concurrencies = [concurrency] + ([1] if serial and concurrency != 1 else [])
    config: dict[str, Any] = {
        "concurrencies": concurrencies,
        "duration": duration,
        "requests": requests,
        "rounds": rounds,
        "warmup": warmup,
        "round_warmup": round_warmup,
    }
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        upstream_port = free_port()
        upstream_args = ["-m", "bench.trivial_upstream", "--port", str(upstream_port)]
        with (
            child_process(upstream_args, upstream_port, Path(tmp) / "upstream.log") as upstream,
            running_platform(platform_overrides(upstream_port)) as platform,
        ):
            pids = {"upstream": upstream.pid, **{k: v for k, v in platform.pids().items() if k != "credits"}}
            background = platform.background_cpu(pids)
            print(f"idle platform CPU: {background['tree_cpu_fraction_of_one_core']:.3f} of one core", flush=True)
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                passes = runner.run(
                    benchmark(
                        platform,
                        upstream_port,
                        pids,
                        concurrencies,
                        warmup=warmup,
                        round_warmup=round_warmup,
                        duration=duration,
                        max_requests=requests,
                        rounds=rounds,
                    )
                )
    report(passes, platform, background, config, output)


def report(
    passes: dict[int, dict[str, list[PhaseResult]]],
    platform: Platform,
    background: dict[str, Any],
    config: dict[str, Any],
    output: Path,
) -> None:
    """Print one table per pass and write the JSON file."""
    document: dict[str, Any] = {
        **run_metadata(),
        "path": PING_PATH,
        "modes": {
            "direct": "upstream with a pre-signed X-Internal-Identity",
            "jwt": "gateway, Authorization: Bearer (EdDSA access token)",
            "api_key": "gateway, X-Api-Key (cached after the first request)",
        },
        "config": config,
        "platform": environment_report(platform),
        "idle_platform_cpu": background,
        "passes": {},
    }
    for concurrency, results in passes.items():
        summaries = {mode: summarize(results[mode], background["per_process"]) for mode in MODES}
        added = {mode: added_latency(results["direct"], results[mode]) for mode in GATEWAY_MODES}
        direct_rps = summaries["direct"]["median_of_rounds"]["throughput_rps"]
        ratios = {
            mode: round(summaries[mode]["median_of_rounds"]["throughput_rps"] / direct_rps, 3) if direct_rps else None
            for mode in GATEWAY_MODES
        }
        print(f"\nconcurrency {concurrency}: median over {config['rounds']} rounds")
        print(f"{'mode':<9}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>10}")
        for mode, s in summaries.items():
            m = s["median_of_rounds"]
            print(
                f"{mode:<9}{s['requests']:>9}{s['errors']:>8}{m['p50_ms']:>9.3f}{m['p90_ms']:>9.3f}"
                f"{m['p99_ms']:>9.3f}{m['throughput_rps']:>10.1f}"
            )
        for mode in GATEWAY_MODES:
            a = added[mode]["median_of_rounds"]
            print(
                f"added by gateway ({mode}): p50 {a['p50_ms']:+.3f} ms, p99 {a['p99_ms']:+.3f} ms; "
                f"throughput x{ratios[mode]}"
            )
        for mode, s in summaries.items():
            cpu = ", ".join(f"{k} {v:.3f}" for k, v in s["cpu_ms_per_request"].items())
            print(f"CPU ms/request net of idle ({mode}): {cpu}")
        document["passes"][f"c{concurrency}"] = {
            "concurrency": concurrency,
            "modes": summaries,
            "added_latency_ms": added,
            "throughput_ratio": ratios,
        }
    write_json(output, document)


if __name__ == "__main__":
    typer.run(main)
