"""The platform's promises, checked after a fault: what must hold whatever was killed, paused or restarted.

- every accepted render reaches a final state;
- per render exactly one reserve and exactly one matching settlement (capture for completed, release otherwise);
- ``totalSpent`` equals the ``creditsUsed`` of the completed renders;
- every final render reaches each subscribed endpoint and its ``callback_url`` under exactly one distinct
  ``webhook-id``, and no render gets two different final webhooks.

Effects are eventually consistent, so each check waits (bounded) for the state to settle, then asserts it exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson

from shared.db import plain_dsn
from shared.testing.fixtures import PluginUser
from shared.testing.receiver import Receiver
from shared.testing.renders import balance, wait_final

FINAL_EVENTS = ("render.completed", "render.failed", "render.canceled")


@dataclass
class Subscriber:
    """A user whose renders the check covers, with where their webhooks and callbacks arrive."""

    user: PluginUser
    endpoint_path: str
    callback_path: str
    render_ids: list[str] = field(default_factory=list)


async def ledger_of(database_url: str, render_ids: list[str]) -> dict[str, list[str]]:
    """Ledger kinds per render (credits' table, read directly: the test is the auditor here)."""
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT reference, kind FROM credits.ledger WHERE reference = ANY($1::text[]) ORDER BY id", render_ids
        )
    finally:
        await conn.close()
    kinds: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        kinds[row["reference"]].append(row["kind"])
    return kinds


def final_webhooks(receiver: Receiver, path: str) -> dict[str, set[tuple[str, str]]]:
    """``renderId -> {(webhook-id, event)}`` of the final-state deliveries that reached ``path``."""
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for request in receiver.received(path):
        body: dict[str, Any] = orjson.loads(request.body)
        if body.get("event") in FINAL_EVENTS:
            seen[body["data"]["renderId"]].add((request.headers["webhook-id"], body["event"]))
    return seen


async def check_invariants(
    client: httpx.AsyncClient,
    database_url: str,
    receiver: Receiver,
    subscribers: list[Subscriber],
    wait_seconds: float = 120,
) -> dict[str, dict[str, Any]]:
    """Wait for the effects of every subscriber's renders, then assert every invariant; returns the final states."""
    finals: dict[str, dict[str, Any]] = {}
    for sub in subscribers:
        for render_id in sub.render_ids:
            finals[render_id] = await wait_final(client, render_id, sub.user.bearer, wait_seconds=wait_seconds)

    expected = {rid: ["reserve", "capture" if f["status"] == "completed" else "release"] for rid, f in finals.items()}
    deadline = time.monotonic() + wait_seconds
    while True:
        ledger = await ledger_of(database_url, list(finals))
        delivered = all(
            set(final_webhooks(receiver, path)) >= set(sub.render_ids)
            for sub in subscribers
            for path in (sub.endpoint_path, sub.callback_path)
        )
        if (ledger == expected and delivered) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.0)  # a late duplicate with another webhook-id would show now

    ledger = await ledger_of(database_url, list(finals))
    for render_id, kinds in expected.items():
        status = finals[render_id]["status"]
        assert ledger.get(render_id) == kinds, f"{render_id} ({status}): ledger {ledger.get(render_id)}"
    for sub in subscribers:
        spent = sum(finals[rid]["creditsUsed"] for rid in sub.render_ids if finals[rid]["status"] == "completed")
        figures = await balance(client, sub.user.bearer)
        assert figures["totalSpent"] == spent, (figures, spent)
        for path in (sub.endpoint_path, sub.callback_path):
            got = final_webhooks(receiver, path)
            for render_id in sub.render_ids:
                deliveries = got.get(render_id, set())
                status = finals[render_id]["status"]
                assert len({webhook_id for webhook_id, _ in deliveries}) == 1, (path, render_id, deliveries)
                assert {event for _, event in deliveries} == {f"render.{status}"}, (path, render_id, deliveries)
    return finals
