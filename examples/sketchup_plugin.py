"""A SketchUp plugin's round trip, as a command line: sign in, hold an API key, render a viewport, download it.

    python examples/sketchup_plugin.py render viewport.png --output render.png --email ada@example.com
    python examples/sketchup_plugin.py login --email ada@example.com        # prints a key to keep
    RENDERIQ_API_KEY=rk_live_... python examples/sketchup_plugin.py render viewport.png -o render.png

Credentials come from the options or the environment (``RENDERIQ_EMAIL``, ``RENDERIQ_PASSWORD``,
``RENDERIQ_API_KEY``); ``--base-url`` (``RENDERIQ_BASE_URL``) defaults to ``make run``'s gateway.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from renderiq import AspectRatio, Client, Quality, RenderiqError, RenderOptions, RenderStatus, Style

PLUGIN_VERSION = "1.0.0"
RENDER_SCOPES = ["renders:create", "renders:read"]

app = typer.Typer(help="Render SketchUp viewports with Renderiq.", no_args_is_help=True)

BaseUrl = Annotated[str, typer.Option(envvar="RENDERIQ_BASE_URL", help="The gateway's URL.")]
Email = Annotated[str | None, typer.Option(envvar="RENDERIQ_EMAIL", help="Account email (to sign in).")]
Password = Annotated[str | None, typer.Option(envvar="RENDERIQ_PASSWORD", help="Account password.")]
ApiKey = Annotated[str | None, typer.Option(envvar="RENDERIQ_API_KEY", help="An API key (skips signing in).")]


def fail(message: str) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(1)


def plugin_client(base_url: str, api_key: str | None = None) -> Client:
    return Client(base_url, api_key=api_key, platform="sketchup", plugin_version=PLUGIN_VERSION)


def create_key(client: Client, email: str | None, password: str | None) -> str:
    """Sign in and create an API key with the render scopes (the plugin keeps the key, not the password)."""
    if not email or not password:
        raise fail("give --email and --password (or RENDERIQ_EMAIL / RENDERIQ_PASSWORD), or an --api-key")
    signed_in = client.auth.signin(email, password)
    typer.echo(f"Signed in as {signed_in.user.email} ({signed_in.user.credits.balance} credits)")
    created = client.keys.create(f"SketchUp plugin on {socket.gethostname()}", RENDER_SCOPES)
    typer.echo(f"Created API key {created.key_prefix}... with scopes {', '.join(created.scopes)}")
    client.auth.signout()
    return created.key


def report(status: RenderStatus) -> None:
    typer.echo(f"  {status.status} {status.progress}%")


def checked(option: str, value: str, allowed: object) -> Any:
    """``value`` once it is one of the values of the ``Literal`` type ``allowed``."""
    choices = get_args(allowed)
    if value not in choices:
        raise fail(f"--{option} must be one of {', '.join(choices)}")
    return value


@app.command()
def login(base_url: BaseUrl = "http://127.0.0.1:8080", email: Email = None, password: Password = None) -> None:
    """Sign in and print a new API key with the render scopes (set it as RENDERIQ_API_KEY)."""
    try:
        with plugin_client(base_url) as client:
            typer.echo(create_key(client, email, password))
    except RenderiqError as exc:
        raise fail(f"[{exc.error_code}] {exc.message}") from exc


@app.command()
def render(
    image: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Viewport screenshot.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the rendered PNG.")] = Path(
        "render.png"
    ),
    quality: Annotated[str, typer.Option(help="standard | high | ultra")] = "standard",
    style: Annotated[str, typer.Option(help="photorealistic | dramatic | soft | studio | natural")] = "photorealistic",
    aspect_ratio: Annotated[str, typer.Option("--aspect-ratio", help="16:9 | 4:3 | 1:1 | 9:16 | 3:2 | 2:3")] = "16:9",
    prompt: Annotated[str | None, typer.Option(help="What to emphasise, in words.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the render.")] = 600.0,
    base_url: BaseUrl = "http://127.0.0.1:8080",
    email: Email = None,
    password: Password = None,
    api_key: ApiKey = None,
) -> None:
    """Render IMAGE and download the result to --output."""
    options: RenderOptions = {
        "quality": checked("quality", quality, Quality),
        "style": checked("style", style, Style),
        "aspect_ratio": checked("aspect-ratio", aspect_ratio, AspectRatio),
        "prompt": prompt,
    }
    try:
        with plugin_client(base_url) as client:
            client.use_api_key(api_key or create_key(client, email, password))
            submitted = client.renders.create(image, **options)
            cost = submitted.created.credits_cost if submitted.created else "?"
            typer.echo(f"Submitted render {submitted.id} ({cost} credits)")
            final = submitted.wait(timeout=timeout, on_status=report)
            if not final.is_completed:
                raise fail(f"render {final.status}: [{final.error_code or final.status.upper()}] {final.error or ''}")
            saved = submitted.download(output)
            typer.echo(f"Saved {saved} ({saved.stat().st_size} bytes, {final.processing_time or 0:.1f}s)")
    except RenderiqError as exc:
        raise fail(f"[{exc.error_code}] {exc.message}") from exc


if __name__ == "__main__":
    app()
