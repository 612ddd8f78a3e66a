"""Operator CLI: ``python -m services.auth.cli --help``.

Runs against ``DATABASE_URL`` (auth's own schema) and reaches credits through its internal API
(``AUTH_CREDITS_URL``), the same way the service does, so it never writes another service's tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import service
from services.auth.config import Settings
from services.auth.main import build_context
from services.auth.models import SCHEMA
from services.auth.service import AuthContext
from shared.db import make_engine, make_sessionmaker, unit_of_work
from shared.errors import DomainError

app = typer.Typer(add_completion=False, help="Operator commands for accounts, operators, credits and keys.")
T = TypeVar("T")


def _run(action: Callable[[AsyncSession, AuthContext], Awaitable[T]]) -> T:
    async def main() -> T:
        settings = Settings()
        ctx = build_context(settings)
        engine = make_engine(settings.database_url, schema=SCHEMA, pool_size=1)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                return await action(session, ctx)
        finally:
            await ctx.credits.aclose()
            await engine.dispose()

    try:
        return asyncio.run(main())
    except DomainError as exc:
        typer.echo(f"error: {exc.message} ({exc.error_code})", err=True)
        raise typer.Exit(1) from exc


@app.command("create-user")
def create_user(
    email: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    name: str | None = None,
    operator: bool = typer.Option(False, help="make the new user an operator"),
) -> None:
    """Create an account (with the signup credits), optionally as an operator."""

    async def action(session: AsyncSession, ctx: AuthContext) -> str:
        if len(password) < 8:
            raise DomainError("password must have at least 8 characters")
        user = await service.create_user(session, ctx, email=email, password=password, name=name, operator=operator)
        await service.grant_signup_credits(ctx, user.id)
        return user.id

    typer.echo(f"created user {_run(action)}")


@app.command("make-operator")
def make_operator(email: str) -> None:
    """Give an existing user access to the operator API and dashboard (effective at their next sign-in)."""

    async def action(session: AsyncSession, _: AuthContext) -> str:
        return (await service.make_operator(session, email)).id

    typer.echo(f"user {_run(action)} is now an operator")


@app.command("grant-credits")
def grant_credits(email: str, credits: int, reason: str = "operator grant", reference: str | None = None) -> None:
    """Add credits to a user's balance (a ledger entry; pass --reference to make a retry safe)."""

    async def action(session: AsyncSession, ctx: AuthContext) -> int:
        user = await service.user_by_email(session, email)
        body = {"credits": credits, "reference": reference or f"cli:{uuid.uuid4()}", "reason": reason}
        result = await ctx.credits.request("POST", f"/internal/credits/{user.id}/grants", json=body)
        return int(result["balance"])

    typer.echo(f"balance is now {_run(action)}")


@app.command("revoke-keys")
def revoke_keys(email: str) -> None:
    """Revoke every API key of a user (gateways drop them within a second)."""

    async def action(session: AsyncSession, _: AuthContext) -> int:
        user = await service.user_by_email(session, email)
        return await service.revoke_all_keys(session, user.id)

    typer.echo(f"revoked {_run(action)} key(s)")


@app.command("delete-user")
def delete_user(email: str) -> None:
    """Delete an account: its keys and sessions are revoked and its access tokens refused at once."""

    async def action(session: AsyncSession, _: AuthContext) -> str:
        return (await service.delete_user(session, email)).id

    typer.echo(f"deleted user {_run(action)}")


if __name__ == "__main__":
    app()
