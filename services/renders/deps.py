"""Dependency aliases of the renders service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.renders.service import RendersContext
from shared.deps import PrincipalDep, SessionDep
from shared.identity import Identity, UserIdentityDep, callers

__all__ = ["ContextDep", "CreditsCallerDep", "PrincipalDep", "SessionDep", "UserIdentityDep"]

CreditsCallerDep = Annotated[Identity, callers("credits")]
"""Renders' ``/internal`` render status: credits' reconciler only."""


def _context(request: Request) -> RendersContext:
    return request.app.state.renders


ContextDep = Annotated[RendersContext, Depends(_context)]
