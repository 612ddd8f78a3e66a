"""Dependency aliases of the telemetry service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.telemetry.errors import OperatorRequiredError
from shared.deps import PrincipalDep, SessionDep
from shared.identity import Identity


async def require_operator(identity: PrincipalDep) -> Identity:
    """The gateway already requires an operator's access token; checked again here (defence in depth)."""
    if not (identity.is_operator and identity.auth_method == "bearer"):
        raise OperatorRequiredError()
    return identity


OperatorDep = Annotated[Identity, Depends(require_operator)]

__all__ = ["OperatorDep", "PrincipalDep", "SessionDep"]
