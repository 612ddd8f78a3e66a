"""``python -m services.renders.worker``: the render worker process (consumer group ``render-workers``).

It serves health and metrics routes on its own port so Kubernetes can probe it; the ``render.jobs`` consumer joins
this lifespan with the renders issue.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.renders.config import Settings
from services.renders.models import SCHEMA
from shared.runtime import Runtime
from shared.serve import serve


def create_worker_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime(settings or Settings(), service="render-worker", schema=SCHEMA, outbox=True)
    return runtime.build_app([])


if __name__ == "__main__":
    serve(create_worker_app, port=Settings().worker_port)
