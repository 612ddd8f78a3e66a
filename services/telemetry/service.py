"""The operator's numbers, read from the per-minute rollups (never from raw events, so a week costs little).

Definitions: a platform's ``successRate`` is completed / (completed + failed) renders in the window (canceled ones
are the user's choice, not a failure; None when nothing finished); ``activeUsers`` are distinct users with a request
or a render event in the window; percentiles come from log-scale buckets (±5%); the window is ``[since, until)`` at
minute granularity.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.telemetry.histogram import percentile
from services.telemetry.models import ROLLUPS
from services.telemetry.rollup import QUEUE_WAIT, RENDER_STATUSES, RENDER_TIME, ROUTE_LATENCY

Buckets = list[tuple[int, int]]
STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _window(since: datetime, until: datetime) -> dict[str, datetime]:
    """Query parameters: the window, and the whole hours inside it (``h0 <= h1``; equal when there are none)."""
    start = since.astimezone(UTC).replace(second=0, microsecond=0)
    first_hour = start.replace(minute=0) + (timedelta(hours=1) if start.minute else timedelta(0))
    last_hour = until.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    h1 = max(first_hour, last_hour)
    return {
        "since": start,
        "until": until,
        "h0": first_hour,
        "h1": h1,
        "head_end": min(first_hour, until),
        "tail_start": max(h1, start),
    }


def _source(rollup: str, *, hourly: bool = True) -> str:
    """A rollup over the window as a subquery with time column ``t``: whole hours from the hourly table, the edges
    (and everything, when ``hourly`` is off) from the per-minute one. A week reads ~170 hour rows per key."""
    minute_table, hour_table = ROLLUPS[rollup]
    minutes, hours = minute_table.name, hour_table.name
    columns = ", ".join(c.name for c in minute_table.columns if c.name != "minute")
    if not hourly:
        return f"(SELECT {columns}, minute AS t FROM {minutes} WHERE minute >= :since AND minute < :until) AS src"
    # Three range scans (head minutes, whole hours, tail minutes): each an index range on the time column.
    return (
        f"(SELECT {columns}, minute AS t FROM {minutes} WHERE minute >= :since AND minute < :head_end"
        f" UNION ALL SELECT {columns}, hour AS t FROM {hours} WHERE hour >= :h0 AND hour < :h1"
        f" UNION ALL SELECT {columns}, minute AS t FROM {minutes} WHERE minute >= :tail_start"
        f" AND minute < :until) AS src"
    )


def _percentiles(buckets: Buckets) -> dict[str, float | None]:
    return {"p50": percentile(buckets, 0.5), "p95": percentile(buckets, 0.95)}


def _success_rate(renders: dict[str, int]) -> float | None:
    finished = renders.get("completed", 0) + renders.get("failed", 0)
    return round(renders.get("completed", 0) / finished, 4) if finished else None


def _empty_renders() -> dict[str, int]:
    return dict.fromkeys(RENDER_STATUSES, 0)


class _Group:
    """The figures of one platform, or one platform and version."""

    def __init__(self) -> None:
        self.renders = _empty_renders()
        self.credits = 0
        self.requests = 0
        self.active_users = 0
        self.render_time: Buckets = []
        self.queue_wait: Buckets = []

    def view(self) -> dict[str, Any]:
        return {
            "activeUsers": self.active_users,
            "requests": self.requests,
            "renders": self.renders,
            "successRate": _success_rate(self.renders),
            "renderTimeMs": _percentiles(self.render_time),
            "queueWaitMs": _percentiles(self.queue_wait),
            "creditsSpent": self.credits,
        }


async def _rows(session: AsyncSession, sql: str, window: dict[str, datetime]) -> list[Any]:
    return list((await session.execute(text(sql), window)).all())


async def summary(session: AsyncSession, since: datetime, until: datetime) -> dict[str, Any]:
    window = _window(since, until)
    platforms: dict[str, _Group] = defaultdict(_Group)
    versions: dict[tuple[str, str], _Group] = defaultdict(_Group)

    for row in await _rows(
        session,
        f"SELECT platform, plugin_version, status, sum(renders), sum(credits) FROM {_source('render')} "
        "GROUP BY 1, 2, 3",
        window,
    ):
        for group in (platforms[row[0]], versions[(row[0], row[1])]):
            group.renders[row[2]] = group.renders.get(row[2], 0) + int(row[3])
            group.credits += int(row[4])
    for row in await _rows(
        session, f"SELECT platform, plugin_version, sum(requests) FROM {_source('request')} GROUP BY 1, 2", window
    ):
        platforms[row[0]].requests += int(row[2])
        versions[(row[0], row[1])].requests += int(row[2])
    # One scan for the three distinct counts (per version, per platform, overall): GROUPING tells the levels apart.
    total_users = 0
    for platform, version, users, level in await _rows(
        session,
        "SELECT platform, plugin_version, count(DISTINCT user_id), GROUPING(platform, plugin_version) "
        f"FROM {_source('active')} GROUP BY GROUPING SETS ((platform, plugin_version), (platform), ())",
        window,
    ):
        if level == 0:
            versions[(platform, version)].active_users = int(users)
        elif level == 1:
            platforms[platform].active_users = int(users)
        else:
            total_users = int(users)
    latency = await _rows(
        session,
        f"SELECT metric, dim1, dim2, bucket, sum(count) FROM {_source('latency')} GROUP BY 1, 2, 3, 4",
        window,
    )
    route_buckets: dict[tuple[str, str], Buckets] = defaultdict(list)
    webhook_buckets: Buckets = []
    for metric, dim1, dim2, bucket, count in latency:
        pair = (bucket, int(count))
        if metric in (RENDER_TIME, QUEUE_WAIT):
            for group in (platforms[dim1], versions[(dim1, dim2)]):
                (group.render_time if metric == RENDER_TIME else group.queue_wait).append(pair)
        elif metric == ROUTE_LATENCY:
            route_buckets[(dim1, dim2)].append(pair)
        else:
            webhook_buckets.append(pair)

    return {
        "since": window["since"].isoformat(),
        "until": until.isoformat(),
        "activeUsers": int(total_users),
        "platforms": [
            {
                "platform": platform,
                **group.view(),
                "versions": [
                    {"pluginVersion": version or None, **versions[(p, version)].view()}
                    for (p, version) in sorted(versions)
                    if p == platform
                ],
            }
            for platform, group in sorted(platforms.items())
        ],
        "routes": await _routes(session, window, route_buckets),
        "webhooks": await _webhooks(session, window, webhook_buckets),
    }


async def _routes(
    session: AsyncSession, window: dict[str, datetime], latency: dict[tuple[str, str], Buckets]
) -> list[dict[str, Any]]:
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for method, route, status, error_code, requests in await _rows(
        session,
        f"SELECT method, route, status, error_code, sum(requests) FROM {_source('request')} GROUP BY 1, 2, 3, 4",
        window,
    ):
        entry = routes.setdefault((method, route), {"requests": 0, "errors": 0, "errorsByCode": {}})
        entry["requests"] += int(requests)
        if status >= 400:
            entry["errors"] += int(requests)
            code = error_code or str(status)
            entry["errorsByCode"][code] = entry["errorsByCode"].get(code, 0) + int(requests)
    return [
        {
            "method": method,
            "route": route,
            "requests": entry["requests"],
            "errors": entry["errors"],
            "errorRate": round(entry["errors"] / entry["requests"], 4) if entry["requests"] else None,
            "errorsByCode": entry["errorsByCode"],
            "latencyMs": _percentiles(latency.get((method, route), [])),
        }
        for (method, route), entry in sorted(routes.items(), key=lambda item: (-item[1]["requests"], item[0]))
    ]


async def _webhooks(session: AsyncSession, window: dict[str, datetime], latency: Buckets) -> dict[str, Any]:
    counts = {
        outcome: int(count)
        for outcome, count in await _rows(
            session,
            f"SELECT outcome, sum(count) FROM {_source('webhook')} GROUP BY 1",
            window,
        )
    }
    succeeded, failed = counts.get("succeeded", 0), counts.get("failed", 0)
    attempts = succeeded + failed
    return {
        "attempts": attempts,
        "succeeded": succeeded,
        "failed": failed,
        "successRate": round(succeeded / attempts, 4) if attempts else None,
        "latencyMs": _percentiles(latency),
        "disabledEndpoints": counts.get("disabled", 0),
    }


async def timeseries(session: AsyncSession, since: datetime, until: datetime, step: str) -> dict[str, Any]:
    """Per step: renders by platform and status, success rate, render time p50/p95, webhook outcomes."""
    window = _window(since, until)
    width = STEPS[step]
    start = _truncate(window["since"], step)
    slots: list[datetime] = []
    moment = start
    while moment < until:
        slots.append(moment)
        moment += width
    index = {slot: i for i, slot in enumerate(slots)}
    hourly = step != "minute"
    trunc = f"date_trunc('{step}', t, 'UTC')"

    renders: dict[str, dict[str, list[int]]] = {}
    finished: dict[str, list[int]] = {"completed": [0] * len(slots), "failed": [0] * len(slots)}
    for slot, platform, status, count in await _rows(
        session,
        f"SELECT {trunc}, platform, status, sum(renders) FROM {_source('render', hourly=hourly)} GROUP BY 1, 2, 3",
        window,
    ):
        i = index.get(slot.astimezone(UTC))
        if i is None:
            continue
        series = renders.setdefault(platform, {s: [0] * len(slots) for s in RENDER_STATUSES})
        series.setdefault(status, [0] * len(slots))[i] += int(count)
        if status in finished:
            finished[status][i] += int(count)

    render_time: list[Buckets] = [[] for _ in slots]
    for slot, bucket, count in await _rows(
        session,
        f"SELECT {trunc}, bucket, sum(count) FROM {_source('latency', hourly=hourly)} "
        f"WHERE metric = '{RENDER_TIME}' GROUP BY 1, 2",
        window,
    ):
        i = index.get(slot.astimezone(UTC))
        if i is not None:
            render_time[i].append((bucket, int(count)))

    webhooks: dict[str, list[int]] = {o: [0] * len(slots) for o in ("succeeded", "failed", "disabled")}
    for slot, outcome, count in await _rows(
        session, f"SELECT {trunc}, outcome, sum(count) FROM {_source('webhook', hourly=hourly)} GROUP BY 1, 2", window
    ):
        i = index.get(slot.astimezone(UTC))
        if i is not None and outcome in webhooks:
            webhooks[outcome][i] += int(count)

    done = [c + f for c, f in zip(finished["completed"], finished["failed"], strict=True)]
    return {
        "step": step,
        "slots": [slot.isoformat() for slot in slots],
        "renders": renders,
        "successRate": [round(c / d, 4) if d else None for c, d in zip(finished["completed"], done, strict=True)],
        "renderTimeMs": {
            "p50": [percentile(b, 0.5) for b in render_time],
            "p95": [percentile(b, 0.95) for b in render_time],
        },
        "webhooks": webhooks,
    }


def _truncate(moment: datetime, step: str) -> datetime:
    moment = moment.astimezone(UTC).replace(second=0, microsecond=0)
    if step in ("hour", "day"):
        moment = moment.replace(minute=0)
    if step == "day":
        moment = moment.replace(hour=0)
    return moment
