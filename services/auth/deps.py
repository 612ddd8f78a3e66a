"""Dependency aliases of the auth service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.auth.service import AuthContext
from shared.deps import PrincipalDep, SessionDep
from shared.identity import ServiceIdentityDep, UserIdentityDep

__all__ = ["ContextDep", "PrincipalDep", "ServiceIdentityDep", "SessionDep", "UserIdentityDep"]


def _context(request: Request) -> AuthContext:
    return request.app.state.auth


ContextDep = Annotated[AuthContext, Depends(_context)]
