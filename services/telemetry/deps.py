"""Dependency aliases of the telemetry service."""

from shared.deps import PrincipalDep, SessionDep

__all__ = ["PrincipalDep", "SessionDep"]
