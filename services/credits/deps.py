"""Dependency aliases of the credits service."""

from shared.deps import PrincipalDep, SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
