"""A JSON response rendered with orjson (fast, and handles datetimes and UUIDs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response


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
