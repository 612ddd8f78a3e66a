"""App factory of the auth service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import lockout
from services.auth.api import router
from services.auth.config import Settings
from services.auth.models import SCHEMA
from services.auth.passwords import Passwords
from services.auth.service import AuthContext
from services.auth.tokens import TokenIssuer, load_signing_keys
from shared.internal_client import InternalClient
from shared.retention import Purge
from shared.runtime import Runtime


def build_context(settings: Settings) -> AuthContext:
    return AuthContext(
        settings=settings,
        passwords=Passwords(settings),
        issuer=TokenIssuer(settings, load_signing_keys(settings)),
        credits=InternalClient(settings.credits_url, caller="auth", callee="credits", settings=settings),
    )


@asynccontextmanager
async def auth_resources(app: FastAPI) -> AsyncIterator[None]:
    app.state.auth = build_context(app.state.settings)
    try:
        yield
    finally:
        await app.state.auth.credits.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def purge_signin_failures(session: AsyncSession) -> int:
        return await lockout.purge_forgotten(session, settings)

    runtime = Runtime(
        settings,
        service="auth",
        schema=SCHEMA,
        outbox=True,
        resources=auth_resources,
        purges=[Purge("signin_failures", purge_signin_failures)],
    )
    return runtime.build_app([router])
