"""Parsing a render submission: multipart (file part or base64 text) or JSON, never more than the upload limit.

The body is counted as it arrives, so an oversized upload is refused with 413 without being read into memory
whole; the declared ``Content-Length`` is checked first so most oversized uploads are refused before any read.
"""

from __future__ import annotations

import base64
import binascii
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AnyHttpUrl, BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile
from starlette.types import Message

from services.renders.errors import DomainError, PayloadTooLargeError

BASE64_OVERHEAD = 4 / 3
FORM_SLACK_BYTES = 1024 * 1024
DATA_URL = re.compile(r"^data:[\w/+.-]+;base64,", re.IGNORECASE)


class CreateRenderFields(BaseModel):
    """Every field of API.md's create request except the image bytes themselves."""

    uploadedImageType: Literal["image/png", "image/jpeg", "image/jpg", "image/webp"]
    prompt: str | None = Field(default=None, max_length=2000)
    quality: Literal["standard", "high", "ultra"] = "high"
    aspectRatio: Literal["16:9", "4:3", "1:1", "9:16", "3:2", "2:3"] = "16:9"
    style: Literal["photorealistic", "dramatic", "soft", "studio", "natural"] = "photorealistic"
    model: str | None = Field(default=None, min_length=1, max_length=100)
    projectId: str | None = Field(default=None, min_length=1, max_length=100)
    callback_url: AnyHttpUrl | None = None

    @field_validator("callback_url")
    @classmethod
    def _short(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None and len(str(value)) > 2048:
            raise ValueError("must be at most 2048 characters")
        return value


EXAMPLE_PNG_BASE64 = (  # a 16 x 16 PNG: the smallest image a render accepts
    "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAGklEQVR42mM8sWUaAymAiYFEMKphVMPQ0QAAh5gCMvyqaxQAAAAASUVORK5CYII="
)


class CreateRenderJson(CreateRenderFields):
    """The JSON form of a create: the image as base64 text (a ``data:`` URL prefix is accepted)."""

    uploadedImageData: str = Field(min_length=1, description="The screenshot, base64 (or a data: URL).")


def form_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema as a form carries it: a form has no null, an optional field is simply left out."""
    schema = model.model_json_schema()
    for name, prop in schema["properties"].items():
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            prop.pop("anyOf")
            prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
            schema["properties"][name] = prop
    return schema


def create_render_request_body() -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a create, from the models above: JSON with base64, or multipart with a file."""
    json_schema = CreateRenderJson.model_json_schema()
    form = form_schema(CreateRenderJson)
    form["properties"]["uploadedImageData"] = {
        "description": "The screenshot: a file part (or base64 text).",
        "type": "string",
        "contentMediaType": "application/octet-stream",
    }
    form["title"] = "CreateRenderForm"
    example = {"uploadedImageData": EXAMPLE_PNG_BASE64, "uploadedImageType": "image/png", "quality": "standard"}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_schema, "example": example},
            "multipart/form-data": {"schema": form},
        },
    }


class Submission(BaseModel):
    fields: CreateRenderFields
    image: bytes


def body_limit(max_upload_bytes: int) -> int:
    """Largest body that can carry a ``max_upload_bytes`` image (base64 in JSON or a form field costs 4/3)."""
    return int(max_upload_bytes * BASE64_OVERHEAD) + FORM_SLACK_BYTES


def limit_body(request: Request, limit: int) -> Request:
    """A view of ``request`` whose body raises 413 as soon as more than ``limit`` bytes arrived."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Upload larger than the {limit} byte limit", details={"limit": limit})
    received = 0
    inner = request.receive

    async def receive() -> Message:
        nonlocal received
        message = await inner()
        received += len(message.get("body", b""))
        if received > limit:
            raise PayloadTooLargeError(f"Upload larger than the {limit} byte limit", details={"limit": limit})
        return message

    return Request(request.scope, receive)


SPOOL_IN_MEMORY_BYTES = 1024 * 1024
SPOOL_CHUNK_BYTES = 256 * 1024


@asynccontextmanager
async def received_whole(request: Request, limit: int) -> AsyncIterator[Request]:
    """The upload received completely (counted, at most ``limit`` bytes; spilled to disk past 1 MiB), then replayed
    as a request: an upload slot is taken only once every byte has arrived, never by a body still in transit."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in limit_body(request, limit).stream():
            spool.write(chunk)
        spool.seek(0)

        async def replay() -> Message:
            chunk = spool.read(SPOOL_CHUNK_BYTES)
            return {"type": "http.request", "body": chunk, "more_body": len(chunk) == SPOOL_CHUNK_BYTES}

        yield Request(request.scope, replay)


def _validate_fields(raw: dict[str, Any]) -> CreateRenderFields:
    try:
        return CreateRenderFields.model_validate(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _decode_base64(text: str, max_bytes: int) -> bytes:
    text = DATA_URL.sub("", text.strip(), count=1)
    if len(text) * 3 // 4 > max_bytes + 3:
        raise PayloadTooLargeError(f"Image larger than the {max_bytes} byte limit", details={"limit": max_bytes})
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DomainError(
            "uploadedImageData is not valid base64",
            details={"field": "uploadedImageData", "reason": "not base64"},
        ) from exc


async def _read_file(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(1024 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"Image larger than the {max_bytes} byte limit", details={"limit": max_bytes})
        chunks.append(chunk)
    return b"".join(chunks)


def _missing_image() -> RequestValidationError:
    return RequestValidationError([{"type": "missing", "loc": ("body", "uploadedImageData"), "msg": "required"}])


async def parse_submission(request: Request, max_upload_bytes: int) -> Submission:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=32, max_part_size=body_limit(max_upload_bytes))
        try:
            raw = {k: v for k, v in form.items() if isinstance(v, str) and k != "uploadedImageData"}
            image_part = form.get("uploadedImageData")
            if image_part is None or image_part == "":
                raise _missing_image()
            fields = _validate_fields(raw)
            if isinstance(image_part, str):
                image = _decode_base64(image_part, max_upload_bytes)
            else:
                image = await _read_file(image_part, max_upload_bytes)
        finally:
            await form.close()
        return Submission(fields=fields, image=image)
    if content_type in ("application/json", ""):
        try:
            payload = orjson.loads(await request.body() or b"null")
        except orjson.JSONDecodeError as exc:
            raise DomainError("Malformed JSON body", details={"field": "body", "reason": "malformed JSON"}) from exc
        if not isinstance(payload, dict):
            raise DomainError("Expected a JSON object", details={"field": "body", "reason": "not an object"})
        data = payload.pop("uploadedImageData", None)
        if data in (None, ""):
            raise _missing_image()
        if not isinstance(data, str):
            raise DomainError(
                "uploadedImageData must be base64 text", details={"field": "uploadedImageData", "reason": "type"}
            )
        fields = _validate_fields(payload)
        return Submission(fields=fields, image=_decode_base64(data, max_upload_bytes))
    raise DomainError(
        "Send multipart/form-data or application/json",
        details={"field": "content-type", "reason": f"unsupported content type {content_type}"},
    )
