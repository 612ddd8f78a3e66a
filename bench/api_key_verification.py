"""API key verification as the gateway does it, timed in-process: cold (a real call to auth) and cache hit.

Starts the whole platform (``bench.stack.running_platform``), signs up a user and creates ``--cold + --warm`` real
API keys through the gateway, then builds the gateway's own ``ApiKeyVerifier`` (``services/gateway/authn.py``) with
the gateway's aiohttp session factory, pointed at the running auth service, and times ``await verifier.verify(key)``:

- ``cold``: the first verification of each distinct key, one at a time: checksum, cache miss, a signed
  ``POST /internal/keys/verify`` to auth (one indexed join in PostgreSQL), the answer cached;
- ``hit``: ``--hits`` verifications cycling over the keys just cached (nothing leaves the process).

``--warm`` extra keys are verified first, unmeasured, to open the pooled connection and warm auth's code paths.
The pieces of the hit path (checksum, SHA-256, cache lookup) are also timed alone. Goals: p99 <= 0.2 ms on a hit,
<= 5 ms cold. Writes ``bench/results/api_key_verification.json``.

Run: ``.venv/bin/python -m bench.api_key_verification [--cold 2000] [--hits 100000]``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
from pathlib import Path
from typing import Any

import httpx
import typer
import uvloop

from bench.loadgen import percentile, run_metadata, write_json
from bench.stack import (
    RESULTS_DIR,
    BenchUser,
    Platform,
    create_api_key,
    environment_report,
    running_platform,
    sign_up,
)
from services.gateway.authn import ApiKeyVerifier, KeyUsageRecorder
from services.gateway.config import Settings as GatewaySettings
from services.gateway.proxy import make_session
from shared import apikeys

RESULTS_FILE = RESULTS_DIR / "api_key_verification.json"
GOALS_MS = {"hit_p99": 0.2, "cold_p99": 5.0}
OVERRIDES = {
    # Key creation goes through the gateway as the user: keep its limits out of the way.
    "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000",
    "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000",
}


async def create_keys(platform: Platform, count: int, concurrency: int) -> tuple[BenchUser, list[str]]:
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=30) as client:
        user = await sign_up(client)
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with slots:
                return await create_api_key(client, user, name=f"bench-{i}")

        started = time.perf_counter()
        keys = await asyncio.gather(*(one(i) for i in range(count)))
        print(f"created {count} keys in {time.perf_counter() - started:.1f}s", flush=True)
    if len(set(keys)) != count:
        raise RuntimeError("duplicate keys")
    return user, list(keys)


def figures_us(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "count": len(ordered),
        "p50_us": round(percentile(ordered, 50) / 1000, 2),
        "p90_us": round(percentile(ordered, 90) / 1000, 2),
        "p99_us": round(percentile(ordered, 99) / 1000, 2),
        "p999_us": round(percentile(ordered, 99.9) / 1000, 2),
        "mean_us": round(statistics.fmean(ordered) / 1000, 2),
        "max_us": round(ordered[-1] / 1000, 2),
    }


def timer_overhead_ns(n: int = 100_000) -> float:
    """What a back-to-back pair of ``perf_counter_ns`` calls costs (included in every sample)."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        t0 = clock()
        samples.append(clock() - t0)
    return statistics.median(samples)


async def measure(platform: Platform, cold: int, warm: int, hits: int, create_concurrency: int) -> dict[str, Any]:
    user, keys = await create_keys(platform, cold + warm, create_concurrency)
    warm_keys, cold_keys = keys[:warm], keys[warm:]
    settings = GatewaySettings(app_env="dev", auth_url=platform.auth_url)  # the dev keys, as the platform's
    session = make_session(settings.internal_max_connections, settings)
    clock = time.perf_counter_ns
    try:
        verifier = ApiKeyVerifier(settings, session, KeyUsageRecorder(settings, session))  # usage never flushed
        for key in warm_keys:
            await verifier.verify(key)
        cold_ns: list[int] = []
        for key in cold_keys:
            t0 = clock()
            principal = await verifier.verify(key, "bench")
            cold_ns.append(clock() - t0)
            if principal.user_id != user.user_id or set(principal.scopes) != set(apikeys.SCOPES):
                raise RuntimeError(f"unexpected principal {principal}")
        print(f"cold: {len(cold_ns)} verifications done", flush=True)
        hit_ns: list[int] = []
        n = len(cold_keys)
        for i in range(hits):
            key = cold_keys[i % n]
            t0 = clock()
            await verifier.verify(key)
            hit_ns.append(clock() - t0)
        print(f"hit: {len(hit_ns)} verifications done", flush=True)
        key = cold_keys[0]
        digest = apikeys.key_hash(key)
        rounds = 100_000
        components = {
            name: round(min(timeit.repeat(fn, number=rounds, repeat=5)) / rounds * 1e6, 3)
            for name, fn in (
                ("is_well_formed", lambda: apikeys.is_well_formed(key)),
                ("key_hash_sha256", lambda: apikeys.key_hash(key)),
                ("cache_lookup", lambda: verifier._cached(digest)),
            )
        }
        cache_entries = len(verifier._cache)
    finally:
        await session.close()
    return {
        "cold": figures_us(cold_ns),
        "hit": figures_us(hit_ns),
        "hit_components_us_best_of_5": components,
        "timer_overhead_ns": timer_overhead_ns(),
        "cache_entries_at_end": cache_entries,
    }


def main(
    cold: int = typer.Option(2000, min=10, max=20000, help="Distinct keys verified cold (one auth call each)."),
    warm: int = typer.Option(50, min=0, max=1000, help="Extra keys verified first, unmeasured."),
    hits: int = typer.Option(100_000, min=100, max=2_000_000, help="Cache-hit verifications (cycling over keys)."),
    create_concurrency: int = typer.Option(8, min=1, max=64, help="Concurrent key creations during set-up."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Time the gateway's API key verification: cold (auth call) and cache hit."""
    with running_platform(OVERRIDES) as platform, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(measure(platform, cold, warm, hits, create_concurrency))
    cold_f, hit_f = results["cold"], results["hit"]
    verdict = {
        "hit_p99_ms": round(hit_f["p99_us"] / 1000, 4),
        "hit_goal_ms": GOALS_MS["hit_p99"],
        "hit_meets_goal": hit_f["p99_us"] / 1000 <= GOALS_MS["hit_p99"],
        "cold_p99_ms": round(cold_f["p99_us"] / 1000, 3),
        "cold_goal_ms": GOALS_MS["cold_p99"],
        "cold_meets_goal": cold_f["p99_us"] / 1000 <= GOALS_MS["cold_p99"],
    }
    print()
    print(f"{'':<6}{'n':>8}{'p50':>12}{'p90':>12}{'p99':>12}{'p99.9':>12}{'max':>12}")
    print(
        f"{'cold':<6}{cold_f['count']:>8}{cold_f['p50_us'] / 1000:>10.3f}ms{cold_f['p90_us'] / 1000:>10.3f}ms"
        f"{cold_f['p99_us'] / 1000:>10.3f}ms{cold_f['p999_us'] / 1000:>10.3f}ms{cold_f['max_us'] / 1000:>10.3f}ms"
    )
    print(
        f"{'hit':<6}{hit_f['count']:>8}{hit_f['p50_us']:>10.2f}us{hit_f['p90_us']:>10.2f}us"
        f"{hit_f['p99_us']:>10.2f}us{hit_f['p999_us']:>10.2f}us{hit_f['max_us']:>10.2f}us"
    )
    print(
        f"goals: hit p99 {verdict['hit_p99_ms']} ms <= {GOALS_MS['hit_p99']} ms: {verdict['hit_meets_goal']}; "
        f"cold p99 {verdict['cold_p99_ms']} ms <= {GOALS_MS['cold_p99']} ms: {verdict['cold_meets_goal']}"
    )
    parts = ", ".join(f"{k} {v:.3f}" for k, v in results["hit_components_us_best_of_5"].items())
    print(f"hit path pieces (us, best of 5): {parts}; timer pair {results['timer_overhead_ns']:.0f} ns")
    write_json(
        output,
        {
            **run_metadata(),
            "what": "await ApiKeyVerifier.verify(key) in-process against a running auth service",
            "config": {"cold": cold, "warm": warm, "hits": hits, "create_concurrency": create_concurrency},
            "platform": environment_report(platform),
            "goals_ms": GOALS_MS,
            "verdict": verdict,
            **results,
        },
    )


if __name__ == "__main__":
    typer.run(main)
