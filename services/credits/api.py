"""HTTP routes of the credits service (thin: parse, call ``service``, shape the response).

Public routes (``/api/plugins/credits``) arrive through the gateway with the caller's identity and read only the
caller's own account. Internal routes (``/internal/credits``) are for other services (auth grants at signup,
renders reserves at create); the gateway never routes ``/internal``, and a user identity is refused on them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from services.credits import service
from services.credits.deps import SessionDep
from services.credits.models import Credits, GrantRequest, Reservation, ReservationRequest, TransactionsPage
from shared.identity import UserIdDep, callers, require_service_identity
from shared.responses import Envelope, JsonResponse, ok

public_router = APIRouter(prefix="/api/plugins/credits")
internal_router = APIRouter(prefix="/internal/credits", dependencies=[Depends(require_service_identity)])

UserIdPath = Annotated[str, Path(min_length=1, max_length=200)]


@public_router.get("", summary="Credit balance", response_model=Envelope[Credits])
async def my_credits(user_id: UserIdDep, session: SessionDep) -> JsonResponse:
    return ok(await service.summary(session, user_id))


@public_router.get("/transactions", summary="Credit ledger", response_model=Envelope[TransactionsPage])
async def my_transactions(
    user_id: UserIdDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JsonResponse:
    return ok(await service.transactions(session, user_id, limit, cursor))


@internal_router.post("/{user_id}/grants", status_code=201, response_model=Credits, dependencies=[callers("auth")])
async def grant(user_id: UserIdPath, body: GrantRequest, session: SessionDep) -> JsonResponse:
    return ok(await service.grant(session, user_id, body.credits, body.reference, body.reason), 201)


@internal_router.post(
    "/{user_id}/reservations", status_code=201, response_model=Reservation, dependencies=[callers("renders")]
)
async def reserve(user_id: UserIdPath, body: ReservationRequest, session: SessionDep) -> JsonResponse:
    return ok(await service.reserve(session, user_id, body.render_id, body.credits), 201)


@internal_router.get("/{user_id}", response_model=Credits, dependencies=[callers("auth")])
async def credits_of(user_id: UserIdPath, session: SessionDep) -> JsonResponse:
    return ok(await service.summary(session, user_id))


routers = [public_router, internal_router]


@internal_router.post("/{user_id}/reservations/{render_id}/release", dependencies=[callers("renders")])
async def release_reservation(user_id: UserIdPath, render_id: UserIdPath, session: SessionDep) -> JsonResponse:
    """Compensation for a render that was never created (its transaction failed after the reservation):
    idempotent, and a no-op when there is no reservation or it was already settled."""
    released = await service.release(session, render_id, "Render not created")
    return JsonResponse({"success": True, "data": {"renderId": render_id, "released": released}})
