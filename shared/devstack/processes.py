"""The platform's processes (ARCHITECTURE.md's table) and the ports they listen on."""

from __future__ import annotations

from dataclasses import dataclass

# The environment variable that sets each process's port (read by its own settings) and each embedded engine's.
PROCESS_PORT_VARIABLES = {
    "gateway": "GATEWAY_PORT",
    "auth": "AUTH_PORT",
    "renders": "RENDERS_PORT",
    "render-worker": "RENDERS_WORKER_PORT",
    "credits": "CREDITS_PORT",
    "webhooks": "WEBHOOKS_PORT",
    "webhooks-dispatcher": "WEBHOOKS_DISPATCHER_PORT",
    "telemetry": "TELEMETRY_PORT",
}
# A process's listeners besides its main port: the gateway's internal one (probes and metrics).
LISTENER_PORT_VARIABLES = ("GATEWAY_INTERNAL_PORT",)
ENGINE_PORT_VARIABLES = ("POSTGRES_PORT", "KAFKA_PORT", "REDIS_PORT")
ALL_PORT_VARIABLES = (*PROCESS_PORT_VARIABLES.values(), *LISTENER_PORT_VARIABLES, *ENGINE_PORT_VARIABLES)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    module: str
    port: int


def platform_processes() -> list[ProcessSpec]:
    """Read each process's port from its own settings, so env overrides (``AUTH_PORT`` ...) apply everywhere."""
    from services.auth.config import Settings as AuthSettings
    from services.credits.config import Settings as CreditsSettings
    from services.gateway.config import Settings as GatewaySettings
    from services.renders.config import Settings as RendersSettings
    from services.telemetry.config import Settings as TelemetrySettings
    from services.webhooks.config import Settings as WebhooksSettings

    renders, webhooks = RendersSettings(), WebhooksSettings()
    return [
        ProcessSpec("auth", "services.auth", AuthSettings().port),
        ProcessSpec("renders-api", "services.renders", renders.port),
        ProcessSpec("render-worker", "services.renders.worker", renders.worker_port),
        ProcessSpec("credits", "services.credits", CreditsSettings().port),
        ProcessSpec("webhooks-api", "services.webhooks", webhooks.port),
        ProcessSpec("webhooks-dispatcher", "services.webhooks.dispatcher", webhooks.dispatcher_port),
        ProcessSpec("telemetry", "services.telemetry", TelemetrySettings().port),
        ProcessSpec("gateway", "services.gateway", GatewaySettings().port),
    ]


def gateway_upstream_env(specs: list[ProcessSpec]) -> dict[str, str]:
    """Point the gateway, and services that call one another, at the ports the services actually use."""
    names = {
        "auth": "GATEWAY_AUTH_URL",
        "renders-api": "GATEWAY_RENDERS_URL",
        "render-worker": "GATEWAY_RENDER_WORKER_URL",
        "credits": "GATEWAY_CREDITS_URL",
        "webhooks-api": "GATEWAY_WEBHOOKS_URL",
        "webhooks-dispatcher": "GATEWAY_WEBHOOKS_DISPATCHER_URL",
        "telemetry": "GATEWAY_TELEMETRY_URL",
    }
    urls = {s.name: f"http://127.0.0.1:{s.port}" for s in specs}
    env = {names[name]: url for name, url in urls.items() if name in names}
    env["AUTH_CREDITS_URL"] = urls["credits"]
    env["RENDERS_CREDITS_URL"] = urls["credits"]
    env["CREDITS_RENDERS_URL"] = urls["renders-api"]
    return env
