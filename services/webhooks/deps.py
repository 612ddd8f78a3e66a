"""Dependency aliases of the webhooks service."""

from shared.deps import PrincipalDep, SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
