"""Tables of the ``auth`` schema: users, refresh tokens (rotating families), API keys, and the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import BigInteger, Column, Identity, Index, Integer, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field

from shared.apikeys import SCOPES
from shared.emails import NormalizedEmail
from shared.models import SQLModel, new_id, registry_for_schema, timestamp_column
from shared.outbox import outbox_broker_table, outbox_table

SCHEMA = "auth"
schema_registry = registry_for_schema()
metadata = schema_registry.metadata


class AuthModel(SQLModel, registry=schema_registry):
    """Base of the auth schema's SQLModel tables."""


class User(AuthModel, table=True):
    """An account; ``email`` is unique in ``shared.emails.normalize_email`` form (migration 0004).

    ``email_original`` and ``email_review`` are set only on rows migration 0004 had to change: the spelling before
    normalisation, and why an operator should look (``collision:<id of the account that kept the address>`` or
    ``unnormalizable``).
    """

    __tablename__ = "users"

    id: str = Field(default_factory=new_id, primary_key=True)
    email: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    name: str | None = None
    password_hash: str
    is_operator: bool = False
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))
    deleted_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    email_original: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    email_review: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class SigninFailure(AuthModel, table=True):
    """Consecutive failed sign-ins of one address (known or not, so a lock-out does not reveal accounts).

    Keyed by a SHA-256 of the normalised address, so addresses typed by strangers are not stored in clear.
    """

    __tablename__ = "signin_failures"

    email_key: str = Field(sa_column=Column(Text, primary_key=True))
    failures: int = Field(sa_column=Column(Integer, nullable=False))
    locked_until: datetime | None = Field(default=None, sa_column=timestamp_column())
    last_failure_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))


class RefreshToken(AuthModel, table=True):
    """One link of a rotation chain; ``family_id`` ties every token descended from one signin."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_family", "family_id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    user_id: str = Field(index=True)
    family_id: str
    parent_id: str | None = None
    token_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))
    expires_at: datetime = Field(sa_column=timestamp_column(False))
    used_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column())


class ApiKey(AuthModel, table=True):
    """A plugin API key, stored as a SHA-256 of the key (the key has ≥ 128 random bits) plus a display prefix."""

    __tablename__ = "plugin_api_keys"

    id: str = Field(default_factory=new_id, primary_key=True)
    # Creation order, for the ``GET /keys`` cursor (``shared.cursor`` pages by an increasing integer).
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), nullable=False, unique=True))
    user_id: str = Field(index=True)
    name: str
    key_hash: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    key_prefix: str
    scopes: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    last_used_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    revoked_at: datetime | None = Field(default=None, sa_column=timestamp_column())
    created_at: datetime | None = Field(default=None, sa_column=timestamp_column(False, True))


outbox = outbox_table(metadata)
outbox_broker = outbox_broker_table(metadata)


# --- request and response bodies (camelCase where API.md says so) -------------------------------------------------
Scope = Literal["renders:create", "renders:read", "projects:read", "projects:write", "webhook:write"]
assert set(SCOPES) == set(Scope.__args__)  # type: ignore[attr-defined]


class SignupRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ana@studio.example", "password": "correct horse", "name": "Ana"}]}
    )

    email: NormalizedEmail
    password: str = PydanticField(min_length=8, max_length=1024)
    name: str | None = PydanticField(default=None, max_length=200)


class SigninRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ana@studio.example", "password": "correct horse"}]}
    )

    email: NormalizedEmail
    password: str = PydanticField(min_length=1, max_length=1024)


class RefreshRequest(BaseModel):
    refresh_token: str = PydanticField(min_length=1, max_length=512)


class Credits(BaseModel):
    balance: int = 0
    totalEarned: int = 0
    totalSpent: int = 0
    monthlyEarned: int = 0
    monthlySpent: int = 0


class UserOut(BaseModel):
    id: str
    email: str
    name: str | None
    created_at: datetime
    credits: Credits


class TokenPair(BaseModel):
    success: bool = True
    access_token: str
    refresh_token: str
    expires_at: datetime
    token_type: Literal["Bearer"] = "Bearer"


class AuthResponse(TokenPair):
    user: UserOut


class MeResponse(BaseModel):
    success: Literal[True] = True
    user: UserOut


class Jwks(BaseModel):
    """RFC 7517 key set: the public keys (``kty``, ``crv``, ``x``, ``kid``, ``alg``, ``use``) that sign tokens."""

    keys: list[dict[str, Any]]


class CreateKeyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "SketchUp on studio PC", "scopes": ["renders:create", "renders:read"], "expiresAt": None}
            ]
        },
    )

    name: str = PydanticField(min_length=1, max_length=100)
    scopes: list[Scope] = PydanticField(min_length=1, max_length=len(SCOPES))
    expiresAt: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _unique(cls, scopes: list[str]) -> list[str]:
        return list(dict.fromkeys(scopes))

    @field_validator("expiresAt")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a timezone (ISO-8601, e.g. 2027-01-01T00:00:00Z)")
        return value


class KeyOut(BaseModel):
    id: str
    name: str
    keyPrefix: str
    scopes: list[str]
    expiresAt: datetime | None
    lastUsedAt: datetime | None
    isActive: bool
    createdAt: datetime


class KeysPage(BaseModel):
    """``GET /keys``: ``data`` stays the list API.md promises; ``nextCursor`` (null on the last page) beside it."""

    success: Literal[True] = True
    data: list[KeyOut]
    nextCursor: str | None


class CreatedKeyOut(BaseModel):
    id: str
    name: str
    key: str
    keyPrefix: str
    scopes: list[str]
    expiresAt: datetime | None
    createdAt: datetime


class VerifyKeyRequest(BaseModel):
    keyHash: str = PydanticField(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")


class VerifiedKey(BaseModel):
    keyId: str
    userId: str
    scopes: list[str]
    expiresAt: datetime | None
    isOperator: bool


class KeyUsageReport(BaseModel):
    usage: dict[str, datetime] = PydanticField(max_length=10000)
