"""Dependency aliases of the renders service."""

from shared.deps import PrincipalDep, SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
