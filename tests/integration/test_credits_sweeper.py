"""Reservations whose render never committed are released; those of real renders are left to their events."""

import uuid

import httpx

from services.credits import sweeper
from services.credits.models import SCHEMA
from shared.db import make_engine, make_sessionmaker
from shared.identity import Identity, sign_identity
from shared.internal_client import InternalClient
from shared.settings import ServiceSettings
from shared.testing.fixtures import Stack, sign_up
from shared.testing.renders import balance, submission

SECRET = ServiceSettings(app_env="dev").internal_identity_secret


async def test_orphaned_reservation_is_released_and_real_ones_are_not(
    stack: Stack, gateway_client: httpx.AsyncClient
) -> None:
    user = await sign_up(gateway_client)
    ghost = str(uuid.uuid4())  # a render whose transaction "failed" after reserving
    token = sign_identity(Identity(auth_method="service", service="tests"), SECRET)
    async with httpx.AsyncClient(base_url=stack.service_urls["credits"]) as credits_api:
        reserved = await credits_api.post(
            f"/internal/credits/{user.user_id}/reservations",
            json={"renderId": ghost, "credits": 5},
            headers={"x-internal-identity": token},
        )
    assert reserved.status_code == 201, reserved.text
    real = await gateway_client.post("/api/plugins/renders", headers=user.bearer, json=submission())
    assert real.status_code == 202
    assert (await balance(gateway_client, user.bearer))["balance"] == 0

    engine = make_engine(stack.env["DATABASE_URL"], schema=SCHEMA)
    renders = InternalClient(stack.service_urls["renders"], caller="credits", secret=SECRET)
    try:
        released = await sweeper.sweep(make_sessionmaker(engine), renders, older_than_seconds=0)
    finally:
        await renders.aclose()
        await engine.dispose()
    assert released >= 1
    credits = await balance(gateway_client, user.bearer)
    assert credits["balance"] == 5, "the ghost's 5 came back; the real render's 5 stay reserved or spent"
    ledger = (await gateway_client.get("/api/plugins/credits/transactions", headers=user.bearer)).json()["data"]
    kinds = {(t["kind"], t["reference"]) for t in ledger["transactions"]}
    assert ("release", ghost) in kinds
    assert ("release", real.json()["data"]["renderId"]) not in kinds
