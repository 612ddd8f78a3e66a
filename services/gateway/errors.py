"""Domain errors of the gateway."""

from __future__ import annotations

from shared.errors import ServiceUnavailableError


class UpstreamUnavailableError(ServiceUnavailableError):
    """The owning service did not answer; the caller may retry (nothing was changed by the gateway)."""

    def __init__(self, service: str) -> None:
        super().__init__("The service is temporarily unavailable, retry shortly", details={"service": service})
