"""HTTP routes of the renders service (thin: parse, call ``service``/``projects``, shape the response)."""

from __future__ import annotations

import contextlib
from typing import Annotated, Literal

import orjson
import structlog
from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import StreamingResponse

from services.renders import projects, service
from services.renders.deps import ContextDep, CreditsCallerDep, SessionDep, UserIdentityDep
from services.renders.errors import DomainError
from services.renders.models import ProjectIn, ProjectOut, ProjectPage, RenderAccepted, RenderPage, RenderStatus
from services.renders.sse import render_events
from services.renders.uploads import (
    body_limit,
    create_render_request_body,
    form_schema,
    limit_body,
    parse_submission,
    received_whole,
)
from shared.db import unit_of_work
from shared.errors import ServiceUnavailableError, documented_errors
from shared.faults import connection_lost
from shared.responses import Envelope, JsonResponse, Message

log = structlog.stdlib.get_logger(__name__)
router = APIRouter()
internal = APIRouter()

StatusFilter = Literal["pending", "processing", "completed", "failed", "canceled"]
PlatformFilter = Literal["sketchup", "revit", "autocad", "rhino", "archicad", "blender", "unknown"]
IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


SSE_SCHEMA = {  # one server-sent event
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["message", "progress"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/RenderStatus"},
        },
    },
    "required": ["data"],
}
SSE_DESCRIPTION = (
    "`text/event-stream`: the current RenderStatus first, then one unnamed event (data: a RenderStatus as JSON) "
    "per status change and named `progress` events for progress, until a final state; comment lines keep the "
    "connection alive."
)


def project_request_body() -> dict[str, object]:
    """JSON or a form, the same fields either way."""
    schema, form = ProjectIn.model_json_schema(), form_schema(ProjectIn)
    return {
        "required": True,
        "content": {
            "application/json": {"schema": schema, "example": {"name": "Villa Rosa", "platform": "sketchup"}},
            "multipart/form-data": {"schema": form},
            "application/x-www-form-urlencoded": {"schema": form},
        },
    }


def _user(identity: object) -> str:
    user_id = getattr(identity, "user_id", None)
    assert isinstance(user_id, str)
    return user_id


@router.post(
    "/api/plugins/renders",
    summary="Submit a render",
    status_code=202,
    response_model=Envelope[RenderAccepted],
    responses=documented_errors(402, 409, 413),
    openapi_extra={"requestBody": create_render_request_body()},
)
async def create_render(
    request: Request,
    identity: UserIdentityDep,
    ctx: ContextDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JsonResponse:
    """Its own unit of work: credits are reserved in another service, so who settles them depends on how it ended.

    Refused or failed before COMMIT, or a COMMIT the server refused: nothing was written, the reservation (if one
    was taken) is released here. A COMMIT whose outcome this process cannot know (the connection broke under it) is
    not refunded blindly: the render may exist, so credits' reconciler settles the reservation from its real status.
    """
    limit = body_limit(ctx.settings.max_upload_bytes)
    async with received_whole(request, limit) as whole, request.app.state.upload_slots:
        submission = await parse_submission(whole, ctx.settings.max_upload_bytes)
        reserving: list[str] = []
        async with request.app.state.runtime.sessions() as session:
            try:
                accepted = await service.create_render(
                    session, ctx, identity, submission, idempotency_key, on_reserving=reserving.append
                )
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await session.rollback()
                refused = isinstance(exc, DomainError) and exc.status_code == 402  # nothing was reserved
                for render_id in [] if refused else reserving:
                    await service.release_orphan(ctx, _user(identity), render_id)
                raise
            try:
                await session.commit()
            except Exception as exc:
                if not connection_lost(exc):  # the server answered: it certainly rolled back
                    await service.release_orphan(ctx, _user(identity), accepted.renderId)
                    raise ServiceUnavailableError("The render could not be created; try again") from exc
                log.error("render_create_commit_outcome_unknown", render_id=accepted.renderId, error=type(exc).__name__)
                raise ServiceUnavailableError(
                    "The render may or may not have been created; retry with the same Idempotency-Key",
                    details={"renderId": accepted.renderId},
                ) from exc
    return JsonResponse({"success": True, "data": accepted.model_dump(mode="json")}, status_code=202)


@router.get("/api/plugins/renders", summary="List renders", response_model=Envelope[RenderPage])
async def list_renders(
    identity: UserIdentityDep,
    session: SessionDep,
    ctx: ContextDep,
    status: StatusFilter | None = None,
    projectId: str | None = Query(default=None, max_length=100),
    limit: int = Query(default=20, ge=1, le=100),
    cursor: str | None = Query(default=None, max_length=500),
) -> JsonResponse:
    page = await service.list_renders(
        session, ctx, _user(identity), status=status, project_id=projectId, limit=limit, cursor=cursor
    )
    return JsonResponse({"success": True, "data": page.model_dump(mode="json")})


@router.get("/api/plugins/renders/{render_id}", summary="Get a render", response_model=Envelope[RenderStatus])
async def get_render(render_id: str, identity: UserIdentityDep, session: SessionDep, ctx: ContextDep) -> JsonResponse:
    render = await service.own_render(session, _user(identity), render_id)
    status = service.to_status(render, ctx.storage, ctx.settings.output_url_ttl_seconds)
    return JsonResponse({"success": True, "data": status.model_dump(mode="json")})


@router.delete(
    "/api/plugins/renders/{render_id}",
    summary="Cancel a render",
    response_model=Envelope[RenderStatus],
    responses=documented_errors(409),
)
async def cancel_render(
    render_id: str, identity: UserIdentityDep, session: SessionDep, ctx: ContextDep
) -> JsonResponse:
    status = await service.cancel_render(session, ctx, _user(identity), render_id)
    return JsonResponse({"success": True, "data": status.model_dump(mode="json")})


@router.get(
    "/api/plugins/renders/{render_id}/events",
    summary="Follow a render (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": SSE_SCHEMA}}, "description": SSE_DESCRIPTION}},
)
async def render_event_stream(
    render_id: str, request: Request, identity: UserIdentityDep, session: SessionDep, ctx: ContextDep
) -> StreamingResponse:
    user_id = _user(identity)
    await service.own_render(session, user_id, render_id)  # 404 before the stream starts
    sessions = request.app.state.runtime.sessions

    async def load() -> service.RenderStatus:
        async with unit_of_work(sessions) as fresh:
            render = await service.own_render(fresh, user_id, render_id)
            return service.to_status(render, ctx.storage, ctx.settings.output_url_ttl_seconds)

    stream = render_events(request.app.state.status_hub, render_id, load, ctx.settings.sse_heartbeat_seconds)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


@router.get("/api/plugins/projects", summary="List projects", response_model=Envelope[ProjectPage])
async def list_projects(
    identity: UserIdentityDep,
    session: SessionDep,
    platform: PlatformFilter | None = None,
    limit: int = Query(default=50, ge=1, le=100),
    offset: int = Query(default=0, ge=0, le=1_000_000),
) -> JsonResponse:
    page = await projects.list_projects(session, _user(identity), platform=platform, limit=limit, offset=offset)
    return JsonResponse({"success": True, "data": page.model_dump(mode="json")})


@router.post(
    "/api/plugins/projects",
    summary="Create a project",
    status_code=201,
    response_model=Envelope[ProjectOut],
    responses=documented_errors(409, 413),
    openapi_extra={"requestBody": project_request_body()},
)
async def create_project(request: Request, identity: UserIdentityDep, session: SessionDep) -> JsonResponse:
    request = limit_body(request, 64 * 1024)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=0, max_fields=10)
        raw: object = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        try:
            raw = orjson.loads(await request.body() or b"null")
        except orjson.JSONDecodeError as exc:
            raise DomainError("Malformed JSON body", details={"field": "body", "reason": "malformed JSON"}) from exc
    try:
        body = ProjectIn.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    project = await projects.create_project(session, _user(identity), body, identity.platform)
    return JsonResponse({"success": True, "data": project.model_dump(mode="json")}, status_code=201)


@router.get("/api/plugins/projects/{project_id}", summary="Get a project", response_model=Envelope[ProjectOut])
async def get_project(project_id: str, identity: UserIdentityDep, session: SessionDep) -> JsonResponse:
    project = await projects.get_project(session, _user(identity), project_id)
    return JsonResponse({"success": True, "data": project.model_dump(mode="json")})


@router.delete("/api/plugins/projects/{project_id}", summary="Delete a project", response_model=Message)
async def delete_project(project_id: str, identity: UserIdentityDep, session: SessionDep) -> JsonResponse:
    await projects.delete_project(session, _user(identity), project_id)
    return JsonResponse({"success": True, "message": "Project deleted"})


@internal.get("/internal/renders/{render_id}")
async def render_state(render_id: str, _: CreditsCallerDep, session: SessionDep) -> JsonResponse:
    """For credits' reconciler: the render's status; 404 ``RENDER_NOT_FOUND`` when it was never committed."""
    status = await service.render_status_name(session, render_id)
    return JsonResponse({"success": True, "data": {"renderId": render_id, "status": status}})


router.include_router(internal)
