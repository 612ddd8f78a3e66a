"""A lean closed-loop HTTP/1.1 load generator shared by the bench scripts, and the statistics they report.

Raw asyncio streams (run it on uvloop), keep-alive, one connection per concurrent worker, requests prepared as bytes
once: the client costs a few tens of microseconds per request, so what is measured is the server. Phases of several
targets alternate over rounds (the order rotates every round) so drift on a noisy machine hits every target alike;
figures are reported pooled and as the median over rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
USER_AGENT = "platform-bench/1"


# --- requests ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One endpoint under test and the exact request bytes sent to it.

    ``per_connection``, when given, replaces ``request`` for the load: connection ``i`` of a phase sends
    ``per_connection[i % len]`` (e.g. one account per connection); ``request`` is still what pre-flight checks send.
    """

    name: str
    port: int
    request: bytes
    per_connection: tuple[bytes, ...] = ()

    def request_for(self, connection: int) -> bytes:
        return self.per_connection[connection % len(self.per_connection)] if self.per_connection else self.request


def build_request(
    method: str,
    path: str,
    port: int,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> bytes:
    """A keep-alive HTTP/1.1 request; ``Content-Length`` is added when there is a body."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"User-Agent: {USER_AGENT}",
        "Accept: application/json",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


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


async def fetch(port: int, request: bytes) -> tuple[int, bytes]:
    """One request on a fresh connection (pre-flight checks)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        status, body, _ = await read_response(reader)
        return status, body
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# --- phases -----------------------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """Measured requests of one phase (one target, one round)."""

    target: str
    round: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_window_seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)  # measured answers by status (0: connection error)


async def run_phase(
    target: Target,
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    max_requests: int | None = None,
    round_no: int = 0,
    cpu_pids: dict[str, int] | None = None,
    ok_status: int = 200,
    request_timeout: float | None = None,
) -> PhaseResult:
    """Open ``concurrency`` connections, warm up for ``warmup`` s, then measure for ``duration`` s (or N requests).

    ``request_timeout``: an answer slower than this counts as an error (status 0) and its connection is replaced;
    for a benchmark whose point is that a server may stop answering (by default there is none: it costs the client).
    """
    cpu_pids = cpu_pids or {}
    result = PhaseResult(target.name, round_no)
    tickets = [max_requests if max_requests is not None else -1]
    start = time.perf_counter()
    measure_from = start + warmup
    measure_until = measure_from + duration
    errors = [0]

    async def worker(connection: int) -> None:
        request = target.request_for(connection)
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
                    writer.write(request)
                    answer = read_response(reader)
                    status, _, keep_alive = await (
                        asyncio.wait_for(answer, request_timeout) if request_timeout is not None else answer
                    )
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, TimeoutError):
                    status, keep_alive = 0, False
                elapsed = time.perf_counter() - t0
                if measured:
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == ok_status:
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

    async def cpu_window() -> tuple[float, dict[str, float]]:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        return time.perf_counter(), cpu_snapshot(cpu_pids)

    window = asyncio.create_task(cpu_window())
    # Bounded even if a server stops answering: no per-request timeout (it would cost the client), one per phase.
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(concurrency))), warmup + duration + 30)
    finished = time.perf_counter()
    after = cpu_snapshot(cpu_pids)
    window_start, before = await window
    result.cpu_window_seconds = finished - window_start
    result.errors = errors[0]
    # Time mode counts requests started in the window (in-flight ones at both edges roughly cancel out);
    # request mode runs until the last ticket's answer.
    result.seconds = duration if max_requests is None else min(duration, finished - measure_from)
    result.cpu_seconds = {name: after[name] - before[name] for name in after if name in before}
    return result


def describe_phase(phase: PhaseResult, label: str = "") -> str:
    ordered = sorted(phase.latencies)
    rps = len(ordered) / phase.seconds if phase.seconds else 0.0
    return (
        f"{label}round {phase.round} {phase.target:<10} n={len(ordered):>6} err={phase.errors} "
        f"p50={percentile(ordered, 50) * 1000:8.3f}ms p99={percentile(ordered, 99) * 1000:8.3f}ms {rps:8.1f} req/s"
    )


def rotated(targets: Sequence[Target], round_no: int) -> list[Target]:
    """Round r starts with target r-1 (a Latin square over len(targets) rounds: every target in every slot)."""
    shift = (round_no - 1) % len(targets)
    return [*targets[shift:], *targets[:shift]]


async def run_alternating(
    targets: Sequence[Target],
    *,
    concurrency: int,
    warmup: float,
    round_warmup: float,
    duration: float,
    rounds: int,
    max_requests: int | None = None,
    cpu_pids: dict[str, int] | None = None,
    label: str = "",
) -> dict[str, list[PhaseResult]]:
    """Warm every target up once, then measure ``rounds`` rounds, the order rotating each round."""
    common: dict[str, Any] = {"concurrency": concurrency, "max_requests": max_requests, "cpu_pids": cpu_pids}
    for target in targets:
        print(f"{label}warm-up {target.name} {warmup:.1f}s", flush=True)
        await run_phase(target, warmup=warmup, duration=0.0, **common)
    results: dict[str, list[PhaseResult]] = {t.name: [] for t in targets}
    for round_no in range(1, rounds + 1):
        for target in rotated(targets, round_no):
            phase = await run_phase(target, warmup=round_warmup, duration=duration, round_no=round_no, **common)
            results[target.name].append(phase)
            print(describe_phase(phase, label), flush=True)
    return results


# --- CPU accounting ---------------------------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process from ``/proc/<pid>/stat`` (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every named process and of this (client) process."""
    snapshot = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    times = os.times()
    snapshot["client"] = times.user + times.system
    return snapshot


# --- statistics -------------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def latency_figures(samples: Sequence[float]) -> dict[str, Any]:
    """Count, p50/p90/p99, max and mean (ms) of latencies in seconds."""
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
    }


def round_figures(phase: PhaseResult) -> dict[str, Any]:
    ordered = sorted(phase.latencies)
    return {
        "round": phase.round,
        "requests": len(ordered),
        "errors": phase.errors,
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "throughput_rps": round(len(ordered) / phase.seconds, 1) if phase.seconds else 0.0,
    }


def summary_table(
    label: str, results: dict[str, list[PhaseResult]], idle_rates: dict[str, float], operation: str = "request"
) -> dict[str, dict[str, Any]]:
    """Summarize each named series of rounds and print the median-of-rounds table every benchmark shows (one row
    per series, then its CPU per operation and process); returns the summaries by name."""
    print(f"{label:<10}{'requests':>9}{'errors':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    summaries: dict[str, dict[str, Any]] = {}
    for name, phases in results.items():
        s = summarize(phases, idle_rates)
        m = s["median_of_rounds"]
        print(
            f"{name:<10}{s['requests']:>9}{s['errors']:>8}{m['p50_ms']:>9.1f}{m['p90_ms']:>9.1f}"
            f"{m['p99_ms']:>9.1f}{m['throughput_rps']:>8.1f}"
        )
        cpu = ", ".join(f"{k} {v:.2f}" for k, v in s["cpu_ms_per_request"].items())
        print(f"{'':<10}CPU ms/{operation} net of idle: {cpu}")
        summaries[name] = s
    return summaries


def summarize(phases: list[PhaseResult], idle_rates: dict[str, float] | None = None) -> dict[str, Any]:
    """Figures of one target: the median over rounds (headline), pooled over rounds, and per round.

    CPU per request is net of each process's idle CPU (``idle_rates``, CPU seconds per second) when given.
    """
    idle_rates = idle_rates or {}
    latencies = sorted(x for p in phases for x in p.latencies)
    requests = len(latencies)
    seconds = sum(p.seconds for p in phases)
    raw: dict[str, float] = {}
    idle: dict[str, float] = {}
    for p in phases:
        for name, value in p.cpu_seconds.items():
            raw[name] = raw.get(name, 0.0) + value
            idle[name] = idle.get(name, 0.0) + idle_rates.get(name, 0.0) * p.cpu_window_seconds
    # /proc counts in ticks of 10 ms: the idle estimate can exceed what a phase used; never report negative CPU.
    cpu = {name: max(0.0, value - idle[name]) for name, value in raw.items()}
    rounds = [round_figures(p) for p in phases]
    median = {
        key: round(statistics.median(r[key] for r in rounds), 3)
        for key in ("p50_ms", "p90_ms", "p99_ms", "throughput_rps")
    }
    return {
        "requests": requests,
        "errors": sum(p.errors for p in phases),
        "measured_seconds": round(seconds, 3),
        "median_of_rounds": median,
        "pooled": {
            "p50_ms": ms(percentile(latencies, 50)),
            "p90_ms": ms(percentile(latencies, 90)),
            "p99_ms": ms(percentile(latencies, 99)),
            "mean_ms": ms(sum(latencies) / requests) if requests else float("nan"),
            "max_ms": ms(latencies[-1]) if latencies else float("nan"),
            "throughput_rps": round(requests / seconds, 1) if seconds else 0.0,
        },
        "cpu_net_of_idle": bool(idle_rates),
        "cpu_ms_per_request": {
            name: round(value / requests * 1000, 4) if requests else float("nan") for name, value in cpu.items()
        },
        "cpu_ms_per_request_raw": {
            name: round(value / requests * 1000, 4) if requests else float("nan") for name, value in raw.items()
        },
        "rounds": rounds,
    }


def added_latency(base: list[PhaseResult], other: list[PhaseResult]) -> dict[str, Any]:
    """What ``other`` adds over ``base``: the median of per-round differences (rounds are adjacent in time) and
    the difference of pooled percentiles."""
    by_round = {p.round: round_figures(p) for p in base}
    diffs: dict[str, list[float]] = {"p50_ms": [], "p90_ms": [], "p99_ms": []}
    for phase in other:
        mine, theirs = round_figures(phase), by_round.get(phase.round)
        if theirs is None:
            continue
        for key, values in diffs.items():
            values.append(mine[key] - theirs[key])
    pooled_base = sorted(x for p in base for x in p.latencies)
    pooled_other = sorted(x for p in other for x in p.latencies)
    return {
        "median_of_rounds": {k: round(statistics.median(v), 3) if v else float("nan") for k, v in diffs.items()},
        "pooled": {f"p{q}_ms": ms(percentile(pooled_other, q) - percentile(pooled_base, q)) for q in (50, 90, 99)},
    }


# --- reporting --------------------------------------------------------------------------------------------------


def run_metadata() -> dict[str, Any]:
    """Where and when a benchmark ran (the load average says how shared the machine was)."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written to {path}")
