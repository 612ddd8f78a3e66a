"""Dependency aliases of the webhooks service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from shared.deps import PrincipalDep, SessionDep
from shared.identity import UserIdentityDep


async def current_user_id(identity: UserIdentityDep) -> str:
    """The caller's user id (``require_user`` has refused callers without one)."""
    assert identity.user_id is not None
    return identity.user_id


UserIdDep = Annotated[str, Depends(current_user_id)]

__all__ = ["PrincipalDep", "SessionDep", "UserIdDep"]
