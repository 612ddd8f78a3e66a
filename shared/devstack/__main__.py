"""``python -m shared.devstack run``: what ``make run`` executes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from shared.devstack.supervisor import run as run_platform

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


if __name__ == "__main__":
    app()
