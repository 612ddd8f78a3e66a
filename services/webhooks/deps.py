"""Dependency aliases of the webhooks service."""

from shared.deps import PrincipalDep, SessionDep
from shared.identity import UserIdDep

__all__ = ["PrincipalDep", "SessionDep", "UserIdDep"]
