"""Domain errors of the credits service; each carries its HTTP status and the contract's ``errorCode``."""

from shared.errors import DomainError, NotFoundError

__all__ = ["DomainError", "NotFoundError"]
