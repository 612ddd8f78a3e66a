"""Render latency per quality: create -> completed through the platform, and the renderer alone in-process.

1. In-process, before the platform starts: ``RendererRegistry(workers=1).get("local").render(...)`` on a
   deterministic 1600x900 viewport-like PNG (``bench.images.scene_png``), after one warm-up render that starts the
   render pool; ``--inprocess-runs`` renders per quality, timed with the stage boundaries the progress callback
   reports (develop = decode + fit + grade, refine for ultra, encode).
2. Through the platform (``bench.stack.running_platform``, otherwise idle): one account with an API key and
   credits, one unmeasured warm-up render (starts the worker's render pool), then ``--runs`` renders per quality,
   one at a time: ``POST /api/plugins/renders`` (JSON, base64) then the render is followed until a final state,
   with ``GET /renders/{id}/events`` (SSE, default) or by polling ``GET /renders/{id}`` every ``--poll-ms``.
   Timed from just before the POST to the arrival of ``completed``; the server's ``createdAt``/``completedAt`` and
   the worker's ``processingTime`` split that into queueing (outbox relay -> Kafka -> worker claim) and rendering.
   Each output is downloaded through its ``outputUrl`` and its size checked against the quality.

Reports p50 and max per quality for both. Writes ``bench/results/render_latency.json``.

Run: ``.venv/bin/python -m bench.render_latency [--runs 3] [--inprocess-runs 3] [--follow sse|poll]``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import typer
import uvloop
from PIL import Image

from bench.images import scene_png
from bench.loadgen import run_metadata, write_json
from bench.stack import (
    RESULTS_DIR,
    Platform,
    cpu_delta,
    create_api_key,
    environment_report,
    grant_credits,
    machine_busy_seconds,
    process_cpu_seconds,
    running_platform,
    sign_up,
)
from services.renders.rendering import RendererRegistry, RenderRequest, output_size

RESULTS_FILE = RESULTS_DIR / "render_latency.json"
RENDERS_PATH = "/api/plugins/renders"
QUALITIES = ("standard", "high", "ultra")
OVERRIDES = {"GATEWAY_RATE_LIMIT_PER_MINUTE": "100000000", "GATEWAY_AUTH_IP_RATE_LIMIT_PER_MINUTE": "1000000"}
FINAL = {"completed", "failed", "canceled"}
INPUT_SIZE = (1600, 900)
FOLLOW_LIMIT_SECONDS = 120.0


def r3(seconds: float) -> float:
    return round(seconds, 3)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": r3(statistics.median(values)),
        "min_s": r3(min(values)),
        "max_s": r3(max(values)),
        "runs": len(values),
    }


# --- 1. the renderer alone --------------------------------------------------------------------------------------


def render_request(image: bytes, quality: str) -> RenderRequest:
    return RenderRequest(
        image=image,
        image_type="image/png",
        prompt=None,
        quality=quality,  # type: ignore[arg-type]
        aspect_ratio="16:9",
        style="photorealistic",
        model="local",
    )


async def renderer_alone(image: bytes, runs: int) -> dict[str, Any]:
    registry = RendererRegistry(workers=1)
    renderer = registry.get("local")
    try:

        async def once(quality: str) -> tuple[float, dict[str, float], bytes]:
            marks: list[tuple[str, float]] = []

            async def progress(percent: int, stage: str) -> None:
                marks.append((stage, time.perf_counter()))

            t0 = time.perf_counter()
            png = await renderer.render(render_request(image, quality), progress)
            total = time.perf_counter() - t0
            stages, previous = {}, t0
            for stage, at in marks:
                stages[stage] = at - previous
                previous = at
            return total, stages, png

        t0 = time.perf_counter()
        await once("standard")  # starts the pool (a spawned process importing Pillow)
        warmup = time.perf_counter() - t0
        figures: dict[str, Any] = {"warmup_render_s": r3(warmup)}
        for quality in QUALITIES:
            totals, stage_runs = [], []
            for _ in range(runs):
                total, stages, png = await once(quality)
                totals.append(total)
                stage_runs.append(stages)
                with Image.open(io.BytesIO(png)) as out:
                    if out.size != output_size(quality, "16:9"):  # type: ignore[arg-type]
                        raise RuntimeError(f"{quality}: output {out.size}, expected {output_size(quality, '16:9')}")  # type: ignore[arg-type]
            stage_names = [s for s in stage_runs[0] if s != "started"]
            figures[quality] = {
                **stats(totals),
                "stages_p50_s": {s: r3(statistics.median(run[s] for run in stage_runs)) for s in stage_names},
                "output_bytes": len(png),
            }
            print(
                f"renderer alone {quality:<9} p50 {figures[quality]['p50_s']:.3f}s max {figures[quality]['max_s']:.3f}s"
                f"  stages {figures[quality]['stages_p50_s']}",
                flush=True,
            )
        return figures
    finally:
        await registry.aclose()


# --- 2. through the platform ------------------------------------------------------------------------------------


async def follow_sse(client: httpx.AsyncClient, render_id: str, key: str, t0: float) -> tuple[dict[str, Any], dict]:
    """Read the event stream until a final status; returns that status and when each status was first seen."""
    seen: dict[str, float] = {}
    async with client.stream("GET", f"{RENDERS_PATH}/{render_id}/events", headers={"X-Api-Key": key}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"events answered {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            status = json.loads(line[5:])
            seen.setdefault(status["status"], time.perf_counter() - t0)
            if status["status"] in FINAL:
                return status, seen
    raise RuntimeError("event stream ended before a final status")


async def follow_poll(
    client: httpx.AsyncClient, render_id: str, key: str, t0: float, interval: float
) -> tuple[dict[str, Any], dict]:
    seen: dict[str, float] = {}
    while True:
        response = await client.get(f"{RENDERS_PATH}/{render_id}", headers={"X-Api-Key": key})
        status = response.json()["data"]
        seen.setdefault(status["status"], time.perf_counter() - t0)
        if status["status"] in FINAL:
            return status, seen
        await asyncio.sleep(interval)


async def one_render(
    client: httpx.AsyncClient, key: str, image_b64: str, quality: str, follow: str, poll_seconds: float
) -> dict[str, Any]:
    body = {
        "uploadedImageData": image_b64,
        "uploadedImageType": "image/png",
        "quality": quality,
        "aspectRatio": "16:9",
        "style": "photorealistic",
    }
    t0 = time.perf_counter()
    response = await client.post(RENDERS_PATH, json=body, headers={"X-Api-Key": key})
    accepted_s = time.perf_counter() - t0
    if response.status_code != 202:
        raise RuntimeError(f"create answered {response.status_code}: {response.text[:300]}")
    render_id = response.json()["data"]["renderId"]
    async with asyncio.timeout(FOLLOW_LIMIT_SECONDS):
        if follow == "sse":
            final, seen = await follow_sse(client, render_id, key, t0)
        else:
            final, seen = await follow_poll(client, render_id, key, t0, poll_seconds)
    if final["status"] != "completed":
        raise RuntimeError(f"render {render_id} ended {final['status']}: {final.get('errorCode')} {final.get('error')}")
    server_total = (
        datetime.fromisoformat(final["completedAt"]) - datetime.fromisoformat(final["createdAt"])
    ).total_seconds()
    download = await client.get(final["outputUrl"])
    with Image.open(io.BytesIO(download.content)) as out:
        size = out.size
    if download.status_code != 200 or size != output_size(quality, "16:9"):  # type: ignore[arg-type]
        raise RuntimeError(f"output of {render_id}: {download.status_code}, size {size}")
    return {
        "render_id": render_id,
        "accepted_s": r3(accepted_s),
        "processing_seen_s": r3(seen["processing"]) if "processing" in seen else None,
        "completed_s": r3(seen["completed"]),
        "server_created_to_completed_s": r3(server_total),
        "worker_processing_time_s": final["processingTime"],
        "queue_s": r3(server_total - float(final["processingTime"])),
        "output_bytes": len(download.content),
    }


async def through_platform(platform: Platform, image: bytes, runs: int, follow: str, poll_ms: float) -> dict[str, Any]:
    image_b64 = base64.b64encode(image).decode()
    async with httpx.AsyncClient(base_url=platform.gateway_url, timeout=60) as client:
        user = await sign_up(client)
        key = await create_api_key(client, user, name="render-latency-bench")
        await asyncio.to_thread(grant_credits, platform, user.email, 10_000)
        t0 = time.perf_counter()
        await one_render(client, key, image_b64, "standard", follow, poll_ms / 1000)
        figures: dict[str, Any] = {"warmup_render_s": r3(time.perf_counter() - t0)}
        print(f"warm-up render through the platform: {figures['warmup_render_s']:.2f}s (starts the render pool)")
        for quality in QUALITIES:
            samples = []
            for _ in range(runs):
                await asyncio.sleep(0.5)  # let the previous render's events settle: an idle platform
                sample = await one_render(client, key, image_b64, quality, follow, poll_ms / 1000)
                samples.append(sample)
                print(
                    f"platform {quality:<9} create->completed {sample['completed_s']:.3f}s (202 after "
                    f"{sample['accepted_s'] * 1000:.0f} ms, processing seen {sample['processing_seen_s']}s; worker "
                    f"processingTime {sample['worker_processing_time_s']}s, queue {sample['queue_s']}s)",
                    flush=True,
                )
            figures[quality] = {
                **stats([s["completed_s"] for s in samples]),
                "accepted_p50_ms": round(statistics.median(s["accepted_s"] for s in samples) * 1000, 1),
                "queue_p50_s": r3(statistics.median(s["queue_s"] for s in samples)),
                "worker_processing_p50_s": r3(statistics.median(float(s["worker_processing_time_s"]) for s in samples)),
                "samples": samples,
            }
    return figures


async def outbox_lag_metrics(platform: Platform) -> dict[str, Any]:
    """``plugin_outbox_publish_lag_seconds`` (row created -> Kafka ack) as the renders API and the render worker
    (both run a relay for the renders schema) exported it over the run: count, mean and cumulative buckets."""
    found: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, port_variable in (("renders-api", "RENDERS_PORT"), ("render-worker", "RENDERS_WORKER_PORT")):
            text = (await client.get(f"http://127.0.0.1:{platform.ports[port_variable]}/metrics")).text
            buckets: dict[str, float] = {}
            total = count = 0.0
            for line in text.splitlines():
                if not line.startswith("plugin_outbox_publish_lag_seconds") or 'schema="renders"' not in line:
                    continue
                metric, value = line.rsplit(" ", 1)
                if metric.startswith("plugin_outbox_publish_lag_seconds_bucket"):
                    buckets[metric.split('le="', 1)[1].split('"', 1)[0]] = float(value)
                elif metric.startswith("plugin_outbox_publish_lag_seconds_sum"):
                    total = float(value)
                elif metric.startswith("plugin_outbox_publish_lag_seconds_count"):
                    count = float(value)
            found[name] = {
                "published": int(count),
                "mean_ms": round(total / count * 1000, 1) if count else None,
                "cumulative_buckets": buckets,
            }
    return found


def platform_cpu_since(platform: Platform, before: dict[tuple[str, int], float], wall0: float) -> float:
    """CPU seconds the platform's processes spent since ``before`` was taken at ``wall0``, counting the processes
    started since (the render pool starts at the first render) in full."""
    groups = platform.process_groups()
    after = process_cpu_seconds(groups)
    spent = sum(cpu_delta(before, after).values())
    for name, processes in groups.items():
        for process in processes:
            key = (name, process.pid)
            if key in after and key not in before:
                with contextlib.suppress(psutil.Error):
                    if process.create_time() >= wall0:
                        spent += after[key]
    return spent


def main(
    runs: int = typer.Option(3, min=1, max=20, help="Renders per quality through the platform (sequential)."),
    inprocess_runs: int = typer.Option(3, min=1, max=20, help="Renders per quality in-process."),
    follow: str = typer.Option("sse", help="How a render is followed: sse (GET /events) or poll (GET /renders/{id})."),
    poll_ms: float = typer.Option(20.0, min=5.0, max=1000.0, help="Polling interval with --follow poll."),
    output: Path = typer.Option(RESULTS_FILE, help="Where to write the JSON results."),
) -> None:
    """Measure create -> completed per quality through the platform and the renderer time in-process."""
    if follow not in ("sse", "poll"):
        raise typer.BadParameter("--follow is sse or poll")
    started = time.monotonic()
    image = scene_png(*INPUT_SIZE, density=3)
    input_info = {"bytes": len(image), "width": INPUT_SIZE[0], "height": INPUT_SIZE[1], "type": "image/png"}
    print(f"input: {input_info}", flush=True)
    machine: dict[str, Any] = {}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        t0, busy0 = time.perf_counter(), machine_busy_seconds()
        alone = runner.run(renderer_alone(image, inprocess_runs))
        machine["in_process_part_busy_cores"] = round((machine_busy_seconds() - busy0) / (time.perf_counter() - t0), 2)
        with running_platform(OVERRIDES) as platform:
            wall0, t0, busy0 = time.time(), time.perf_counter(), machine_busy_seconds()
            cpu0 = process_cpu_seconds(platform.process_groups())
            platform_figures = runner.run(through_platform(platform, image, runs, follow, poll_ms))
            seconds = time.perf_counter() - t0
            platform_cores = platform_cpu_since(platform, cpu0, wall0) / seconds
            machine["platform_part_busy_cores"] = round((machine_busy_seconds() - busy0) / seconds, 2)
            machine["platform_part_platform_cores"] = round(platform_cores, 2)
            lag = runner.run(outbox_lag_metrics(platform))
    print(
        f"machine busy (cores of 2): in-process part {machine['in_process_part_busy_cores']}, platform part "
        f"{machine['platform_part_busy_cores']} of which the platform {machine['platform_part_platform_cores']} "
        "(the rest: this client, and any other work on the machine)"
    )
    print(f"\n{'quality':<10}{'renderer alone p50/max s':>26}{'create->completed p50/max s':>30}{'queue p50 s':>13}")
    for quality in QUALITIES:
        a, p = alone[quality], platform_figures[quality]
        print(
            f"{quality:<10}{a['p50_s']:>15.3f} / {a['max_s']:<8.3f}{p['p50_s']:>19.3f} / {p['max_s']:<8.3f}"
            f"{p['queue_p50_s']:>13.3f}"
        )
    for name, figures in lag.items():
        le_50ms = figures["cumulative_buckets"].get("0.05", 0.0)
        print(
            f"outbox relay in {name}: {figures['published']} rows published, mean lag {figures['mean_ms']} ms, "
            f"{le_50ms:.0f} within 50 ms"
        )
    write_json(
        output,
        {
            **run_metadata(),
            "input_png": input_info,
            "config": {"runs": runs, "inprocess_runs": inprocess_runs, "follow": follow, "poll_ms": poll_ms},
            "renderer_alone": alone,
            "through_platform": platform_figures,
            "outbox_publish_lag_metrics": lag,
            "machine_busy_cores": machine,
            "platform": environment_report(platform),
            "wall_seconds": round(time.monotonic() - started, 1),
            "notes": [
                "renderer_alone: RendererRegistry(workers=1).get('local').render in this process, pool warm",
                "through_platform: from just before POST /renders to the completed status arriving at the client",
                "queue_s: server createdAt->completedAt minus the worker's processingTime (relay, Kafka, claim)",
                "outbox_publish_lag_metrics: plugin_outbox_publish_lag_seconds scraped from /metrics at the end",
            ],
        },
    )


if __name__ == "__main__":
    typer.run(main)
