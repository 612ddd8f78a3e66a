"""HTTP routes of the webhooks service (thin: parse, call ``service``, shape the response).

Every route requires the gateway's internal identity; the public routes arrive with
webhook registration and the delivery log (webhooks issue).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shared.identity import require_identity

router = APIRouter(dependencies=[Depends(require_identity)])
