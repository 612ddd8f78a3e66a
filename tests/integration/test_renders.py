"""Renders, projects and credits through the real gateway, services, worker, broker and database."""

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from shared.testing.fixtures import PluginUser, Stack, run_cli, sign_up
from shared.testing.kafka import as_event, read_topic, wait_until
from shared.testing.renders import GEMINI_MODEL, balance, image_bytes, submission, wait_final

OUTPUT_SIZES = {("standard", "16:9"): (1920, 1080), ("standard", "9:16"): (1080, 1920), ("high", "4:3"): (3840, 2880)}


@pytest.fixture
async def client(gateway_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return gateway_client


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> PluginUser:
    return await sign_up(client)


async def create(client: httpx.AsyncClient, user: PluginUser, **fields: Any) -> httpx.Response:
    headers = dict(user.bearer)
    if key := fields.pop("idempotency_key", None):
        headers["Idempotency-Key"] = key
    return await client.post("/api/plugins/renders", headers=headers, json=submission(**fields))


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["errorCode"] == code, body
    return body


async def test_render_completes_with_exact_output_charged_once_and_events_in_order(
    client: httpx.AsyncClient, alice: PluginUser, stack: Stack
) -> None:
    response = await create(
        client, alice, quality="standard", aspectRatio="9:16", style="dramatic", prompt="dusk light"
    )
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]
    assert accepted["status"] == "pending"
    assert accepted["creditsCost"] == 5
    assert accepted["estimatedTime"] > 0
    render_id = accepted["renderId"]
    final = await wait_final(client, render_id, alice.bearer)
    assert final["status"] == "completed", final
    assert final["progress"] == 100
    assert final["creditsUsed"] == 5
    assert final["processingTime"] > 0
    assert final["completedAt"]
    assert (final["quality"], final["aspectRatio"], final["style"], final["model"]) == (
        "standard",
        "9:16",
        "dramatic",
        "local",
    )
    # The output downloads without credentials, at exactly the requested size.
    download = await client.get(final["outputUrl"])
    assert download.status_code == 200
    image = Image.open(io.BytesIO(download.content))
    assert image.format == "PNG"
    assert image.size == (1080, 1920)

    async def settled() -> bool:
        credits = await balance(client, alice.bearer)
        return credits["totalSpent"] == 5

    await wait_until(settled, wait_seconds=20)
    credits = await balance(client, alice.bearer)
    assert credits == {"balance": 5, "totalEarned": 10, "totalSpent": 5, "monthlyEarned": 10, "monthlySpent": 5}

    records = [
        r
        for r in await read_topic(stack.env["KAFKA_BOOTSTRAP_SERVERS"], "render.events", expected=10**6, wait_seconds=3)
        if r.key == render_id.encode()
    ]
    events = [as_event(r) for r in records]
    assert [e.type for e in events] == ["render.created", "render.processing", "render.completed"]
    assert len({r.partition for r in records}) == 1
    assert all(e.subject == render_id and e.source == "/services/renders" for e in events)
    assert events[-1].data["outputUrl"]
    assert events[-1].data["creditsUsed"] == 5


@pytest.mark.parametrize(("quality", "ratio"), [("standard", "16:9"), ("high", "4:3")])
async def test_output_size_per_quality_and_ratio(
    client: httpx.AsyncClient, alice: PluginUser, quality: str, ratio: str
) -> None:
    response = await create(client, alice, quality=quality, aspectRatio=ratio)
    final = await wait_final(client, response.json()["data"]["renderId"], alice.bearer)
    image = Image.open(io.BytesIO((await client.get(final["outputUrl"])).content))
    assert image.size == OUTPUT_SIZES[(quality, ratio)]


async def test_multipart_file_part_and_base64_text_part(client: httpx.AsyncClient, alice: PluginUser) -> None:
    fields = {"uploadedImageType": "image/jpeg", "quality": "standard", "aspectRatio": "1:1", "style": "soft"}
    as_file = await client.post(
        "/api/plugins/renders",
        headers=alice.bearer,
        data=fields,
        files={"uploadedImageData": ("view.jpg", image_bytes(fmt="JPEG"), "image/jpeg")},
    )
    assert as_file.status_code == 202, as_file.text
    as_text = await client.post(
        "/api/plugins/renders",
        headers=alice.bearer,
        data={
            **fields,
            "uploadedImageType": "image/png",
            "uploadedImageData": base64.b64encode(image_bytes()).decode(),
        },
        files={"unused": ("x.txt", b"", "text/plain")},
    )
    assert as_text.status_code == 202, as_text.text
    for response in (as_file, as_text):
        final = await wait_final(client, response.json()["data"]["renderId"], alice.bearer)
        assert final["status"] == "completed"


async def test_ai_model_through_provider_adapter(client: httpx.AsyncClient, alice: PluginUser) -> None:
    response = await create(client, alice, model=GEMINI_MODEL, aspectRatio="3:2")
    final = await wait_final(client, response.json()["data"]["renderId"], alice.bearer)
    assert final["status"] == "completed", final
    assert final["model"] == GEMINI_MODEL
    image = Image.open(io.BytesIO((await client.get(final["outputUrl"])).content))
    assert image.size == (1920, 1280)


async def test_failure_refunds(client: httpx.AsyncClient, alice: PluginUser) -> None:
    response = await create(client, alice, model=GEMINI_MODEL, prompt="FAIL_400")
    final = await wait_final(client, response.json()["data"]["renderId"], alice.bearer)
    assert final["status"] == "failed"
    assert final["errorCode"] == "PROVIDER_REJECTED"
    assert final["error"]
    assert final["creditsUsed"] == 0

    async def refunded() -> bool:
        return (await balance(client, alice.bearer))["balance"] == 10

    await wait_until(refunded, wait_seconds=20)
    assert (await balance(client, alice.bearer))["totalSpent"] == 0


async def test_cancel_refunds_and_finished_renders_cannot_be_canceled(
    client: httpx.AsyncClient, alice: PluginUser
) -> None:
    slow = await create(client, alice, model=GEMINI_MODEL, prompt="SLOW_4")
    render_id = slow.json()["data"]["renderId"]
    canceled = await client.delete(f"/api/plugins/renders/{render_id}", headers=alice.bearer)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["data"]["status"] == "canceled"

    async def refunded() -> bool:
        return (await balance(client, alice.bearer))["balance"] == 10

    await wait_until(refunded, wait_seconds=20)
    assert_error(await client.delete(f"/api/plugins/renders/{render_id}", headers=alice.bearer), 409, "INVALID_STATE")
    await asyncio.sleep(5)  # the slow provider call ends meanwhile; its late output must be discarded
    final = await wait_final(client, render_id, alice.bearer)
    assert final["status"] == "canceled"
    assert final["outputUrl"] is None
    assert (await balance(client, alice.bearer))["totalSpent"] == 0


async def test_insufficient_credits(client: httpx.AsyncClient, alice: PluginUser) -> None:
    body = assert_error(await create(client, alice, quality="ultra"), 402, "INSUFFICIENT_CREDITS")
    assert body["requiredCredits"] == 15
    assert body["availableCredits"] == 10
    assert (await balance(client, alice.bearer))["balance"] == 10


async def test_twenty_concurrent_creates_on_a_balance_for_two(client: httpx.AsyncClient, alice: PluginUser) -> None:
    responses = await asyncio.gather(*(create(client, alice, quality="standard") for _ in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(202) == 2, codes
    assert codes.count(402) == 18, codes
    assert (await balance(client, alice.bearer))["balance"] == 0


async def test_idempotency_replay_and_conflict(client: httpx.AsyncClient, alice: PluginUser) -> None:
    first = await create(client, alice, idempotency_key="view-42", prompt="same")
    again = await create(client, alice, idempotency_key="view-42", prompt="same")
    assert first.status_code == again.status_code == 202
    assert first.json()["data"]["renderId"] == again.json()["data"]["renderId"]
    assert (await balance(client, alice.bearer))["balance"] == 5
    assert_error(
        await create(client, alice, idempotency_key="view-42", prompt="different"), 409, "IDEMPOTENCY_CONFLICT"
    )
    # Concurrent duplicates with a new key: one render, one charge.
    bob = await sign_up(client)
    burst = await asyncio.gather(*(create(client, bob, idempotency_key="burst", prompt="p") for _ in range(6)))
    assert {r.status_code for r in burst} == {202}
    assert len({r.json()["data"]["renderId"] for r in burst}) == 1
    assert (await balance(client, bob.bearer))["balance"] == 5


async def test_other_users_objects_are_not_found(client: httpx.AsyncClient, alice: PluginUser) -> None:
    bob = await sign_up(client)
    render_id = (await create(client, alice)).json()["data"]["renderId"]
    project = (await client.post("/api/plugins/projects", headers=alice.bearer, json={"name": "Villa"})).json()["data"]
    for method, path in (
        ("GET", f"/api/plugins/renders/{render_id}"),
        ("DELETE", f"/api/plugins/renders/{render_id}"),
        ("GET", f"/api/plugins/renders/{render_id}/events"),
        ("GET", f"/api/plugins/projects/{project['id']}"),
        ("DELETE", f"/api/plugins/projects/{project['id']}"),
        ("GET", "/api/plugins/renders/does-not-exist"),
    ):
        assert_error(await client.request(method, path, headers=bob.bearer), 404, "NOT_FOUND")
    assert_error(await create(client, bob, projectId=project["id"]), 404, "NOT_FOUND")
    assert (await client.get("/api/plugins/renders", headers=bob.bearer)).json()["data"]["renders"] == []


@pytest.mark.parametrize(
    ("overrides", "status", "code", "field"),
    [
        ({"quality": "extreme"}, 400, "INVALID_INPUT", "quality"),
        ({"aspectRatio": "21:9"}, 400, "INVALID_INPUT", "aspectRatio"),
        ({"style": "anime"}, 400, "INVALID_INPUT", "style"),
        ({"uploadedImageType": "image/gif"}, 400, "INVALID_INPUT", "uploadedImageType"),
        ({"uploadedImageType": None}, 400, "MISSING_REQUIRED_FIELD", "uploadedImageType"),
        ({"uploadedImageData": None}, 400, "MISSING_REQUIRED_FIELD", "uploadedImageData"),
        ({"prompt": "x" * 2001}, 400, "INVALID_INPUT", "prompt"),
        ({"callback_url": "not a url"}, 400, "INVALID_INPUT", "callback_url"),
        ({"callback_url": "ftp://example.com/hook"}, 400, "INVALID_INPUT", "callback_url"),
        ({"callback_url": "http://169.254.169.254/latest/meta-data"}, 400, "INVALID_INPUT", "callback_url"),
        ({"callback_url": "https://user:pw@hooks.example.com/x"}, 400, "INVALID_INPUT", "callback_url"),
        ({"uploadedImageData": "%%%not-base64%%%"}, 400, "INVALID_INPUT", "uploadedImageData"),
        ({"uploadedImageData": base64.b64encode(b"GIF89a-not-an-image").decode()}, 400, "INVALID_IMAGE", None),
        ({"uploadedImageType": "image/jpeg"}, 400, "INVALID_IMAGE", None),
        ({"model": "imaginary-model"}, 400, "MODEL_UNAVAILABLE", None),
        ({"projectId": "no-such-project"}, 404, "NOT_FOUND", None),
    ],
)
async def test_bad_submissions_are_refused_and_cost_nothing(
    client: httpx.AsyncClient, alice: PluginUser, overrides: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    body = assert_error(await create(client, alice, **overrides), status, code)
    if field:
        assert body["details"]["field"] == field
    assert (await balance(client, alice.bearer))["balance"] == 10
    assert (await client.get("/api/plugins/renders", headers=alice.bearer)).json()["data"]["renders"] == []


async def test_malformed_bodies(client: httpx.AsyncClient, alice: PluginUser) -> None:
    headers = {**alice.bearer, "content-type": "application/json"}
    assert_error(await client.post("/api/plugins/renders", headers=headers, content=b"{"), 400, "INVALID_INPUT")
    assert_error(await client.post("/api/plugins/renders", headers=headers, content=b"[1]"), 400, "INVALID_INPUT")
    text = {**alice.bearer, "content-type": "text/plain"}
    assert_error(await client.post("/api/plugins/renders", headers=text, content=b"hello"), 400, "INVALID_INPUT")


async def test_list_filters_and_cursor_pagination(client: httpx.AsyncClient, stack: Stack) -> None:
    rich = await sign_up(client)
    granted = await asyncio.to_thread(run_cli, stack, "grant-credits", rich.email, "100")
    assert granted.returncode == 0, granted.stderr
    project = (await client.post("/api/plugins/projects", headers=rich.bearer, json={"name": "Tower"})).json()["data"]
    ids = [
        (await create(client, rich, projectId=project["id"] if i % 2 else None)).json()["data"]["renderId"]
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/plugins/renders", headers=rich.bearer, params=params)).json()["data"]
        seen += [r["renderId"] for r in page["renders"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    in_project = (
        await client.get("/api/plugins/renders", headers=rich.bearer, params={"projectId": project["id"]})
    ).json()["data"]["renders"]
    assert {r["renderId"] for r in in_project} == {ids[i] for i in range(7) if i % 2}
    assert_error(
        await client.get("/api/plugins/renders", headers=rich.bearer, params={"cursor": "%%%"}), 400, "INVALID_INPUT"
    )
    assert_error(
        await client.get("/api/plugins/renders", headers=rich.bearer, params={"limit": 101}), 400, "INVALID_INPUT"
    )
    assert_error(
        await client.get("/api/plugins/renders", headers=rich.bearer, params={"status": "done"}), 400, "INVALID_INPUT"
    )
    counted = (await client.get(f"/api/plugins/projects/{project['id']}", headers=rich.bearer)).json()["data"]
    assert counted["renderCount"] == 3


async def test_event_stream_until_final(client: httpx.AsyncClient, alice: PluginUser) -> None:
    render_id = (await create(client, alice, model=GEMINI_MODEL, prompt="SLOW_1")).json()["data"]["renderId"]
    statuses: list[str] = []
    async with client.stream("GET", f"/api/plugins/renders/{render_id}/events", headers=alice.bearer) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_name = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event_name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if event_name is None:
                    statuses.append(json.loads(line[5:])["status"])
                event_name = None
    assert statuses[-1] == "completed"
    assert statuses == sorted(set(statuses), key=statuses.index), "one event per status change"
    assert set(statuses) <= {"pending", "processing", "completed"}


P = "/api/plugins/projects"


async def test_projects_crud(client: httpx.AsyncClient, alice: PluginUser) -> None:
    made = []
    for name, platform in (("Villa Rosa", "sketchup"), ("Villa Rosa", "revit"), ("Ünïcode Tower!", None)):
        body = {"name": name, "description": "d", **({"platform": platform} if platform else {})}
        response = await client.post(
            "/api/plugins/projects", headers={**alice.bearer, "X-Plugin-Platform": "rhino"}, json=body
        )
        assert response.status_code == 201, response.text
        made.append(response.json()["data"])
    assert [p["slug"] for p in made] == ["villa-rosa", "villa-rosa-2", "unicode-tower"]
    assert [p["platform"] for p in made] == ["sketchup", "revit", "rhino"]
    assert all(p["renderCount"] == 0 for p in made)
    form = await client.post("/api/plugins/projects", headers=alice.bearer, data={"name": "From form"})
    assert form.status_code == 201
    page = (await client.get("/api/plugins/projects", headers=alice.bearer, params={"limit": 2})).json()["data"]
    assert page["total"] == 4
    assert page["limit"] == 2
    assert page["offset"] == 0
    assert len(page["projects"]) == 2
    revit = (await client.get("/api/plugins/projects", headers=alice.bearer, params={"platform": "revit"})).json()[
        "data"
    ]
    assert [p["id"] for p in revit["projects"]] == [made[1]["id"]]
    assert_error(
        await client.get("/api/plugins/projects", headers=alice.bearer, params={"limit": 101}), 400, "INVALID_INPUT"
    )
    assert_error(
        await client.post("/api/plugins/projects", headers=alice.bearer, json={"name": ""}), 400, "INVALID_INPUT"
    )
    assert_error(
        await client.post("/api/plugins/projects", headers=alice.bearer, json={}), 400, "MISSING_REQUIRED_FIELD"
    )
    assert_error(
        await client.post("/api/plugins/projects", headers=alice.bearer, json={"name": "x", "platform": "maya"}),
        400,
        "INVALID_INPUT",
    )
    nul = {"name": "a\x00b"}  # found by the fuzzer: was a 503 (the database refused it, uvicorn cut the answer)
    for sent in (
        await client.post(P, headers=alice.bearer, json=nul),
        await client.post(P, headers=alice.bearer, data=nul),
    ):
        assert_error(sent, 400, "INVALID_INPUT")
    deleted = await client.delete(f"/api/plugins/projects/{made[0]['id']}", headers=alice.bearer)
    assert deleted.status_code == 200
    assert deleted.json()["success"] is True
    assert_error(await client.get(f"/api/plugins/projects/{made[0]['id']}", headers=alice.bearer), 404, "NOT_FOUND")
