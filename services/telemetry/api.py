"""HTTP routes of the telemetry service (thin: parse, call ``service``, shape the response).

``/api/admin/telemetry/*`` is for operators (the gateway requires an operator's access token, and so does this
service); ``/admin`` serves the dashboard page and its assets, which sign in and call those routes themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import AfterValidator, BeforeValidator

from services.telemetry import service
from services.telemetry.config import Settings
from services.telemetry.deps import OperatorDep, SessionDep
from services.telemetry.errors import InvalidWindowError, NotFoundError
from shared.responses import Envelope, JsonResponse

api_router = APIRouter(prefix="/api/admin/telemetry")
dashboard_router = APIRouter(prefix="/admin", include_in_schema=False)

DASHBOARD_DIR = Path(__file__).parent / "dashboard"
ASSET_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
DEFAULT_WINDOW = timedelta(hours=24)
DASHBOARD_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""The page loads nothing from elsewhere and runs no inline script; the browser is told to hold it to that."""


def _iso_only(value: object) -> object:
    """Pydantic would read ``0.0`` as a Unix time; the contract (and the spec) say ISO 8601."""
    if isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit():
        raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-26T10:00:00Z")
    return value


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _utc_in_range(value: datetime | None) -> datetime | None:
    """In UTC, between 1970 and 9000: a moment at the calendar's edge (``0001-01-01T00:00+14:00``) cannot even be
    converted to UTC, nor have the default window subtracted from it."""
    if value is None:
        return None
    try:
        moment = _utc(value)
    except OverflowError:
        raise ValueError("out of range") from None
    if not EARLIEST <= moment < LATEST:
        raise ValueError("must be between 1970 and 9000")
    return moment


Moment = Annotated[
    datetime | None,
    BeforeValidator(_iso_only),
    AfterValidator(_utc_in_range),
    Query(description="ISO 8601; naive times are UTC"),
]


def _window(request: Request, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    settings: Settings = request.app.state.settings
    until = _utc(until) if until else datetime.now(UTC)
    since = _utc(since) if since else until - DEFAULT_WINDOW
    if since >= until:
        raise InvalidWindowError("since", "must be before until")
    if until - since > timedelta(days=settings.max_window_days):
        raise InvalidWindowError("since", f"the window may span at most {settings.max_window_days} days")
    return since, until


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@api_router.get("/summary", summary="Usage summary", response_model=Envelope[dict[str, Any]])
async def summary(
    _: OperatorDep, session: SessionDep, request: Request, since: Moment = None, until: Moment = None
) -> JsonResponse:
    start, end = _window(request, since, until)
    return JsonResponse({"success": True, "data": await service.summary(session, start, end)})


@api_router.get("/timeseries", summary="Usage over time", response_model=Envelope[dict[str, Any]])
async def timeseries(
    _: OperatorDep,
    session: SessionDep,
    request: Request,
    since: Moment = None,
    until: Moment = None,
    step: Literal["minute", "hour", "day"] | None = None,
) -> JsonResponse:
    start, end = _window(request, since, until)
    span = end - start
    chosen = step or ("minute" if span <= timedelta(hours=3) else "hour" if span <= timedelta(days=7) else "day")
    if span / service.STEPS[chosen] > 5000:
        raise InvalidWindowError("step", "too many points; use a coarser step")
    return JsonResponse({"success": True, "data": await service.timeseries(session, start, end, chosen)})


@dashboard_router.get("")
async def dashboard_root() -> Response:
    return RedirectResponse("/admin/", status_code=307)


@dashboard_router.get("/{asset:path}")
async def dashboard(asset: str) -> Response:
    """The dashboard's own files (no CDN: everything it needs ships with the service)."""
    name = asset or "index.html"
    path = (DASHBOARD_DIR / name).resolve()
    if not path.is_file() or DASHBOARD_DIR.resolve() not in path.parents or path.suffix not in ASSET_TYPES:
        raise NotFoundError("Not found")
    return FileResponse(path, media_type=ASSET_TYPES[path.suffix], headers=DASHBOARD_HEADERS)


routers = [api_router, dashboard_router]
