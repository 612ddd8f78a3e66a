"""What the gateway adds to a request: the same GET sent directly to a trivial upstream and through the gateway.

Starts ``bench.trivial_upstream`` and the real gateway (``python -m services.gateway``) as child processes on free
127.0.0.1 ports, then drives both with a lean closed-loop load generator (raw asyncio streams on uvloop, HTTP/1.1
keep-alive, one connection per concurrent worker). Direct and gateway phases alternate over a few rounds (ABBA order)
so drift on a noisy machine hits both alike. Prints p50/p90/p99 latency, throughput, the added latency, and CPU time per
request of each process, and writes everything to ``bench/results/gateway_overhead.json``.

Run: ``.venv/bin/python -m bench.gateway_overhead [--concurrency 16] [--duration 5] [--rounds 3]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
import uvloop

from bench.trivial_upstream import PING_PATH
from shared.engines import die_with_parent, free_port, stop_process, wait_for_port
from shared.identity import IDENTITY_HEADER, Identity, sign_identity
from shared.settings import ServiceSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = REPO_ROOT / "bench" / "results" / "gateway_overhead.json"
EXPECTED_BODY = {"success": True, "data": {"pong": True}}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- load generator ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One endpoint under test and the exact request bytes sent to it."""

    name: str
    port: int
    request: bytes


def build_request(port: int, identity_token: str | None) -> bytes:
    """A keep-alive GET of the ping path; the direct variant carries the internal identity itself."""
    lines = [
        f"GET {PING_PATH} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "User-Agent: gateway-overhead-bench/1",
        "Accept: application/json",
    ]
    if identity_token:
        lines.append(f"{IDENTITY_HEADER}: {identity_token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open (Content-Length, or chunked as a fallback)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = -1
    chunked = False
    keep_alive = True
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lname == b"connection" and b"close" in value.lower():
            keep_alive = False
    if length >= 0:
        return status, await reader.readexactly(length), keep_alive
    if chunked:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected: the empty line after the last chunk
                return status, b"".join(parts), keep_alive
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, await reader.read(), False


@dataclass
class PhaseResult:
    """Measured requests of one phase (one target, one round)."""

    target: str
    round: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)


async def run_phase(
    target: Target,
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    max_requests: int | None,
    round_no: int,
    cpu_pids: dict[str, int],
) -> PhaseResult:
    """Open ``concurrency`` connections, warm up for ``warmup`` s, then measure for ``duration`` s (or N requests)."""
    result = PhaseResult(target.name, round_no)
    tickets = [max_requests if max_requests is not None else -1]
    start = time.perf_counter()
    measure_from = start + warmup
    measure_until = measure_from + duration
    errors = [0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= measure_until:
                    return
                measured = t0 >= measure_from
                if measured and tickets[0] >= 0:
                    if tickets[0] == 0:
                        return
                    tickets[0] -= 1
                try:
                    writer.write(target.request)
                    status, _, keep_alive = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    status, keep_alive = 0, False
                elapsed = time.perf_counter() - t0
                if measured:
                    if status == 200:
                        result.latencies.append(elapsed)
                    else:
                        errors[0] += 1
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def cpu_window() -> dict[str, float]:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        return cpu_snapshot(cpu_pids)

    window = asyncio.create_task(cpu_window())
    # Bounded even if a server stops answering: no per-request timeout (it would cost the client), one per phase.
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), warmup + duration + 30)
    finished = time.perf_counter()
    after = cpu_snapshot(cpu_pids)
    before = await window
    result.errors = errors[0]
    # Time mode counts requests started in the window (in-flight ones at both edges roughly cancel out);
    # request mode runs until the last ticket's answer.
    result.seconds = duration if max_requests is None else finished - measure_from
    result.cpu_seconds = {name: after[name] - before[name] for name in after}
    return result


# --- CPU accounting ---------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every child process and of this (client) process."""
    snapshot = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    times = os.times()
    snapshot["client"] = times.user + times.system
    return snapshot


# --- statistics -------------------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(phases: list[PhaseResult]) -> dict[str, Any]:
    """Pooled figures of one target over its rounds, plus per-round figures to show drift."""
    latencies = sorted(x for p in phases for x in p.latencies)
    requests = len(latencies)
    seconds = sum(p.seconds for p in phases)
    cpu: dict[str, float] = {}
    for p in phases:
        for name, value in p.cpu_seconds.items():
            cpu[name] = cpu.get(name, 0.0) + value
    rounds = []
    for p in phases:
        ordered = sorted(p.latencies)
        rounds.append(
            {
                "round": p.round,
                "requests": len(ordered),
                "errors": p.errors,
                "p50_ms": round(percentile(ordered, 50) * 1000, 3),
                "p99_ms": round(percentile(ordered, 99) * 1000, 3),
                "throughput_rps": round(len(ordered) / p.seconds, 1) if p.seconds else 0.0,
            }
        )
    return {
        "requests": requests,
        "errors": sum(p.errors for p in phases),
        "measured_seconds": round(seconds, 3),
        "p50_ms": round(percentile(latencies, 50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 99) * 1000, 3),
        "mean_ms": round(sum(latencies) / requests * 1000, 3) if requests else float("nan"),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else float("nan"),
        "throughput_rps": round(requests / seconds, 1) if seconds else 0.0,
        "cpu_ms_per_request": {
            name: round(value / requests * 1000, 4) if requests else float("nan") for name, value in cpu.items()
        },
        "rounds": rounds,
    }


# --- processes --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def child(args: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that dies with us, is waited for on ``port`` and is always stopped on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        try:
            wait_for_port(port, 30, proc)
            yield proc
        except BaseException:
            if proc.poll() is not None:  # it died on its own: show why
                log.flush()
                tail = log_path.read_text(errors="replace")[-4000:]
                sys.stderr.write(f"{' '.join(args)} exited with {proc.returncode}; log tail:\n{tail}\n")
            raise
        finally:
            stop_process(proc)


async def preflight(direct: Target, gateway: Target) -> None:
    """Both paths answer 200 with the expected body, and the upstream refuses a request without identity."""
    for target in (direct, gateway):
        reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
        writer.write(target.request)
        status, body, _ = await read_response(reader)
        writer.close()
        if status != 200 or json.loads(body) != EXPECTED_BODY:
            raise RuntimeError(f"{target.name}: unexpected answer {status} {body[:200]!r}")
    reader, writer = await asyncio.open_connection("127.0.0.1", direct.port)
    writer.write(build_request(direct.port, None))
    status, _, _ = await read_response(reader)
    writer.close()
    if status != 401:
        raise RuntimeError(f"upstream answered {status} without identity; expected 401")


async def run_benchmark(
    direct: Target,
    gateway: Target,
    *,
    concurrency: int,
    warmup: float,
    round_warmup: float,
    duration: float,
    max_requests: int | None,
    rounds: int,
    cpu_pids: dict[str, int],
) -> dict[str, list[PhaseResult]]:
    """Warm both paths up once, then alternate measured phases in ABBA order."""
    await preflight(direct, gateway)
    common: dict[str, Any] = {"concurrency": concurrency, "max_requests": max_requests, "cpu_pids": cpu_pids}
    for target in (direct, gateway):
        print(f"warm-up {target.name} {warmup:.1f}s", flush=True)
        await run_phase(target, warmup=warmup, duration=0.0, round_no=0, **common)
    results: dict[str, list[PhaseResult]] = {direct.name: [], gateway.name: []}
    for round_no in range(1, rounds + 1):
        order = (direct, gateway) if round_no % 2 else (gateway, direct)
        for target in order:
            phase = await run_phase(target, warmup=round_warmup, duration=duration, round_no=round_no, **common)
            results[target.name].append(phase)
            ordered = sorted(phase.latencies)
            print(
                f"round {round_no} {target.name:<8} n={len(ordered):>6} err={phase.errors} "
                f"p50={percentile(ordered, 50) * 1000:7.3f}ms p99={percentile(ordered, 99) * 1000:7.3f}ms "
                f"{len(ordered) / phase.seconds:8.1f} req/s",
                flush=True,
            )
    return results


# --- entry point ------------------------------------------------------------------------------------------------


def main(
    concurrency: int = typer.Option(16, min=1, max=512, help="Concurrent keep-alive connections (closed loop)."),
    duration: float = typer.Option(5.0, min=0.5, max=30.0, help="Measured seconds per phase."),
    requests: int | None = typer.Option(
        None, min=1, help="Measured requests per phase instead (still capped at --duration seconds)."
    ),
    rounds: int = typer.Option(3, min=1, max=10, help="Measured phases per target, alternating ABBA."),
    warmup: float = typer.Option(2.0, min=0.0, max=30.0, help="Initial warm-up seconds per target."),
    round_warmup: float = typer.Option(0.5, min=0.0, max=10.0, help="Unmeasured seconds at the start of each phase."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure the latency and throughput the gateway adds in front of a trivial service."""
    secret = ServiceSettings(app_env="dev").internal_identity_secret
    token = sign_identity(Identity(platform="unknown", request_id="bench"), secret, ttl_seconds=3600)
    upstream_port, gateway_port = free_port(), free_port()
    base_env = {
        **os.environ,
        "APP_ENV": "dev",
        "INTERNAL_IDENTITY_SECRET": secret,
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        tmp_dir = Path(tmp)
        # Engines the gateway only touches in /api/plugins/health: free ports nothing listens on.
        gateway_env = {
            **base_env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "GATEWAY_CREDITS_URL": f"http://127.0.0.1:{upstream_port}",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/postgres",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "STORAGE_DIR": str(tmp_dir / "storage"),
        }
        upstream_args = ["-m", "bench.trivial_upstream", "--port", str(upstream_port)]
        with (
            child(upstream_args, base_env, upstream_port, tmp_dir / "upstream.log") as upstream_proc,
            child(["-m", "services.gateway"], gateway_env, gateway_port, tmp_dir / "gateway.log") as gateway_proc,
        ):
            direct = Target("direct", upstream_port, build_request(upstream_port, token))
            via_gateway = Target("gateway", gateway_port, build_request(gateway_port, None))
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                results = runner.run(
                    run_benchmark(
                        direct,
                        via_gateway,
                        concurrency=concurrency,
                        warmup=warmup,
                        round_warmup=round_warmup,
                        duration=duration,
                        max_requests=requests,
                        rounds=rounds,
                        cpu_pids={"upstream": upstream_proc.pid, "gateway": gateway_proc.pid},
                    )
                )
    report(
        results,
        output,
        concurrency=concurrency,
        duration=duration,
        requests=requests,
        rounds=rounds,
        warmup=warmup,
        round_warmup=round_warmup,
    )


def report(results: dict[str, list[PhaseResult]], output: Path, **config: Any) -> None:
    """Print the summary table and write the JSON file."""
    direct = summarize(results["direct"])
    gateway = summarize(results["gateway"])
    added = {
        "p50_ms": round(gateway["p50_ms"] - direct["p50_ms"], 3),
        "p90_ms": round(gateway["p90_ms"] - direct["p90_ms"], 3),
        "p99_ms": round(gateway["p99_ms"] - direct["p99_ms"], 3),
    }
    print()
    print(f"{'':<9}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>10}")
    for name, s in (("direct", direct), ("gateway", gateway)):
        print(
            f"{name:<9}{s['requests']:>9}{s['errors']:>8}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}"
            f"{s['p99_ms']:>9.3f}{s['throughput_rps']:>10.1f}"
        )
    print(f"added latency: p50 {added['p50_ms']:+.3f} ms, p99 {added['p99_ms']:+.3f} ms")
    for name, s in (("direct", direct), ("gateway", gateway)):
        cpu = ", ".join(f"{k} {v:.3f}" for k, v in s["cpu_ms_per_request"].items())
        print(f"CPU ms/request ({name}): {cpu}")
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "path": PING_PATH,
        "config": config,
        "direct": direct,
        "gateway": gateway,
        "added_latency_ms": added,
        "throughput_ratio": round(gateway["throughput_rps"] / direct["throughput_rps"], 3)
        if direct["throughput_rps"]
        else None,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    typer.run(main)
