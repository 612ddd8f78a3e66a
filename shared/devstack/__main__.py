"""``python -m shared.devstack run``: what ``make run`` executes."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import typer

from shared.devstack.supervisor import run as run_platform

SERVICE_DEPLOYMENTS = {"gateway": "gateway", "auth": "auth", "renders": "renders-api", "credits": "credits"}
"""The services that call another's /internal API (``shared.keys.SERVICE_CALLERS``) -> their Deployment."""

app = typer.Typer(add_completion=False, help="Local platform on embedded engines.")


@app.command()
def run(var_dir: Path = typer.Option(Path(os.environ.get("VAR_DIR", "var")), help="data and logs")) -> None:
    """Start engines (unless their URL is set), migrate, create topics, start every process; Ctrl-C stops all."""
    os.environ.setdefault("APP_ENV", "dev")
    raise typer.Exit(asyncio.run(run_platform(var_dir)))


@app.command()
def migrate() -> None:
    """Apply every service's migrations to ``DATABASE_URL`` (what the Kubernetes migration Job runs)."""
    from shared.migrations import upgrade

    upgrade(os.environ["DATABASE_URL"])


@app.command()
def keys(
    write: Path | None = typer.Option(None, help="write <deployment>-keys.env files here (the prod overlay)"),
) -> None:
    """A fresh set of identity keys: each private key for its one Deployment, the public keys for every pod."""
    from shared.keys import generate_private_text, load_private_key, public_text

    gateway_identity = generate_private_text()
    own = {name: generate_private_text() for name in SERVICE_DEPLOYMENTS}
    files = {f"{dep}-keys.env": {"SERVICE_IDENTITY_KEY": own[name]} for name, dep in SERVICE_DEPLOYMENTS.items()}
    files["gateway-keys.env"]["GATEWAY_IDENTITY_PRIVATE_KEY"] = gateway_identity
    public = {name: public_text(load_private_key(key)) for name, key in own.items()}
    if write is not None:
        for name, values in files.items():
            path = write / name
            path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
            path.chmod(0o600)
            typer.echo(f"wrote {path}")
    else:
        for name, values in files.items():
            typer.echo(f"# {name}\n" + "".join(f"{k}={v}\n" for k, v in values.items()))
    typer.echo("# public keys (ConfigMap platform-config)")
    typer.echo(f"INTERNAL_IDENTITY_PUBLIC_KEY: '{public_text(load_private_key(gateway_identity))}'")
    typer.echo(f"SERVICE_IDENTITY_PUBLIC_KEYS: '{json.dumps(public, separators=(',', ':'))}'")


if __name__ == "__main__":
    app()
