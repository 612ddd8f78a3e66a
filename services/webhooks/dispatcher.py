"""``python -m services.webhooks.dispatcher``: the webhook dispatcher process (consumer group ``webhooks``).

It serves health and metrics routes on its own port; the ``render.events`` consumer and the delivery loop join this
lifespan with the webhooks issue.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.webhooks.config import Settings
from services.webhooks.models import SCHEMA
from shared.runtime import Runtime
from shared.serve import serve


def create_dispatcher_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="webhooks-dispatcher", schema=SCHEMA, outbox=True)
    return runtime.build_app([])


if __name__ == "__main__":
    serve(create_dispatcher_app, port=Settings().dispatcher_port)
