"""A JSON response rendered with orjson (fast, and handles datetimes and UUIDs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Literal, TypeVar

import orjson
from pydantic import BaseModel
from starlette.responses import Response

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """The contract's success envelope, declared as a route's ``response_model`` so the public spec shows it."""

    success: Literal[True] = True
    data: T


class Message(BaseModel):
    """What a delete answers: ``{success, message}``."""

    success: Literal[True] = True
    message: str


class Success(BaseModel):
    """A bare acknowledgement: ``{success: true}``."""

    success: Literal[True] = True


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(data: BaseModel | Sequence[BaseModel], status_code: int = 200) -> JsonResponse:
    """The contract's success envelope ``{success: true, data}``, camelCase aliases applied."""
    dumped = (
        [d.model_dump(mode="json", by_alias=True) for d in data]
        if not isinstance(data, BaseModel)
        else data.model_dump(mode="json", by_alias=True)
    )
    return JsonResponse({"success": True, "data": dumped}, status_code=status_code)
