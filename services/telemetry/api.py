"""HTTP routes of the telemetry service (thin: parse, call ``service``, shape the response).

Every route requires the gateway's internal identity; the public routes arrive with
the operator summary and dashboard (telemetry issue).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shared.identity import require_identity

router = APIRouter(dependencies=[Depends(require_identity)])
