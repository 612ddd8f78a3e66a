"""``Call``: one API request described as data (what to send, how to read the answer), for either transport."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

# DELETE is left out: its effect is idempotent but its answer is not (a repeated delete says 404 or 409).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT"})
Params = Mapping[str, str | int]


@dataclass(frozen=True)
class Call(Generic[T]):
    """``path`` is an absolute URL or a path from the gateway's root (e.g. ``/api/plugins/auth/me``)."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Params | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes, str]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    authenticated: bool = True
    retry: bool = True
    accept: frozenset[int] = frozenset()
    """Non-2xx statuses whose body is still the answer (health's 503 ``down``)."""
    stream: bool = False
    """Hand back the open response, unread (server-sent events)."""
    read_timeout: float | None = None

    @property
    def safe_to_repeat(self) -> bool:
        """Whether sending it twice cannot do twice: idempotent methods, or a body with an ``Idempotency-Key``."""
        return self.method in SAFE_METHODS or "Idempotency-Key" in self.headers


def query(**values: str | int | None) -> dict[str, str | int]:
    """Query parameters without the unset ones."""
    return {k: v for k, v in values.items() if v is not None}


def data_of(model: type[M]) -> Callable[[httpx.Response], M]:
    """Reads ``data`` of the success envelope as ``model``."""
    return lambda response: model.model_validate(response.json()["data"])


def data_list_of(model: type[M]) -> Callable[[httpx.Response], list[M]]:
    adapter = TypeAdapter(list[model])  # type: ignore[valid-type]
    return lambda response: adapter.validate_python(response.json()["data"])


def body_of(model: type[M], key: str | None = None) -> Callable[[httpx.Response], M]:
    """Reads the whole body (or its ``key``) as ``model``: the auth endpoints answer without a ``data`` envelope."""
    return lambda response: model.model_validate(response.json() if key is None else response.json()[key])


def nothing(_: httpx.Response) -> None:
    return None


def raw(response: httpx.Response) -> httpx.Response:
    return response


def content(response: httpx.Response) -> bytes:
    return response.content
