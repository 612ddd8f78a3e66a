"""FastAPI dependencies every service uses: one session per request (committed in one place) and the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import unit_of_work
from shared.identity import IdentityDep


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with unit_of_work(request.app.state.runtime.sessions) as session:
        yield session


# scope="function": the commit runs when the endpoint returns, before the response is sent, so a failed commit
# becomes an error response instead of a success the database never saw.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PrincipalDep = IdentityDep
