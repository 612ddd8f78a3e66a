"""Dependency aliases of the auth service."""

from shared.deps import PrincipalDep, SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
