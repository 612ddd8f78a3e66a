"""Dependency aliases of the auth service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.auth.service import AuthContext
from shared.deps import PrincipalDep, SessionDep
from shared.identity import Identity, ServiceIdentityDep, UserIdentityDep, callers

__all__ = ["ContextDep", "GatewayCallerDep", "PrincipalDep", "ServiceIdentityDep", "SessionDep", "UserIdentityDep"]

GatewayCallerDep = Annotated[Identity, callers("gateway")]
"""Auth's ``/internal`` key routes: the gateway's own service credential only."""


def _context(request: Request) -> AuthContext:
    return request.app.state.auth


ContextDep = Annotated[AuthContext, Depends(_context)]
