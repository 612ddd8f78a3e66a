"""The gateway's own routes: health and signed file downloads. Routed paths never reach FastAPI (see main)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, Response

from services.gateway.deps import HealthDep, SettingsDep, StorageDep
from services.gateway.health import now_iso, overall_status
from services.gateway.models import ApiInfo, HealthResponse
from services.gateway.platform import detect_plugin
from shared.errors import NotFoundError
from shared.responses import JsonResponse
from shared.storage import LocalStorage, StorageError, verify_signature

API_VERSION = "1.0.0"
router = APIRouter()


@router.get(
    "/api/plugins/health",
    summary="Platform health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "A core dependency is down"}},
)
async def health(request: Request, checker: HealthDep) -> JsonResponse:
    services = await checker.services()
    status = overall_status(services)
    plugin = detect_plugin(request.headers)
    body = HealthResponse(
        success=status != "down",
        status=status,
        timestamp=now_iso(),
        api=ApiInfo(version=API_VERSION, platform=plugin.platform, version_detected=plugin.version),
        services=services,
    )
    return JsonResponse(body.model_dump(), status_code=503 if status == "down" else 200)


@router.get("/files/{key:path}")
async def download(
    key: str, storage: StorageDep, settings: SettingsDep, expires: str = "", signature: str = ""
) -> Response:
    """A stored object behind a signed, expiring URL; any bad or expired signature looks like a missing file."""
    if not verify_signature(settings.storage_signing_secret, key, expires, signature):
        raise NotFoundError("File not found or link expired")
    if not isinstance(storage, LocalStorage):
        raise NotFoundError("File not found or link expired")
    try:
        path = storage.path_of(key)
    except StorageError as exc:
        raise NotFoundError("File not found or link expired") from exc
    if not path.is_file():
        raise NotFoundError("File not found or link expired")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
