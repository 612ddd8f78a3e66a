"""HTTP routes of the credits service (thin: parse, call ``service``, shape the response).

Every route requires the gateway's internal identity; the public routes arrive with
balances, ledger and reservations (renders issue).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shared.identity import require_identity

router = APIRouter(dependencies=[Depends(require_identity)])
