"""CloudEvents 1.0 in Kafka binary mode: ``ce_*`` headers carry the attributes, the value is the JSON ``data``.

Binary mode is used everywhere: consumers can route and dedupe on headers without parsing the body, and the key is
the aggregate id (``subject``) so one aggregate's events stay in one partition, in order.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


def _now() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    subject: str
    time: datetime = Field(default_factory=_now)
    data: dict[str, Any] = Field(default_factory=dict)
    dataschema: str | None = None
    extensions: dict[str, str] = Field(default_factory=dict)

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_subject", self.subject.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.dataschema:
            headers.append(("ce_dataschema", self.dataschema.encode()))
        headers.extend((f"ce_{k}", v.encode()) for k, v in self.extensions.items())
        return headers

    def kafka_key(self) -> bytes:
        return self.subject.encode()

    def kafka_value(self) -> bytes:
        return orjson.dumps(self.data)

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]] | dict[str, Any], value: bytes) -> CloudEvent:
        """Rebuild an event from a consumed record; raises ``ValueError`` for a record that is not one."""
        items = headers.items() if isinstance(headers, dict) else headers
        attrs: dict[str, str] = {}
        for name, raw in items:
            if name.startswith("ce_"):
                attrs[name[3:]] = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
        missing = [a for a in ("id", "source", "type", "subject") if a not in attrs]
        if missing:
            raise ValueError(f"not a CloudEvent: missing {', '.join(missing)}")
        known = {"id", "source", "type", "subject", "time", "dataschema", "specversion"}
        data = orjson.loads(value) if value else {}
        if not isinstance(data, dict):
            raise ValueError("CloudEvent data must be a JSON object")
        return cls(
            id=attrs["id"],
            source=attrs["source"],
            type=attrs["type"],
            subject=attrs["subject"],
            time=datetime.fromisoformat(attrs["time"]) if "time" in attrs else _now(),
            data=data,
            dataschema=attrs.get("dataschema"),
            extensions={k: v for k, v in attrs.items() if k not in known},
        )
