"""Events auth publishes (through its outbox, in the caller's transaction): key revocations and user deletions.

They travel on ``apikey.events`` so every gateway replica drops the key (or the user's tokens) at once.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from services.auth.models import outbox
from shared.events.contracts import ApiKeyRevokedV1, UserDeletedV1
from shared.events.envelope import CloudEvent
from shared.events.topics import APIKEY_EVENTS
from shared.outbox import enqueue

SOURCE = "/services/auth"


async def key_revoked(session: AsyncSession, *, key_id: str, user_id: str, key_hash: str) -> None:
    data = ApiKeyRevokedV1(keyId=key_id, userId=user_id, keyHash=key_hash)
    event = CloudEvent(source=SOURCE, type="apikey.revoked", subject=key_id, data=data.model_dump(exclude_none=True))
    await enqueue(session, outbox, APIKEY_EVENTS, event)


async def user_deleted(session: AsyncSession, *, user_id: str) -> None:
    data = UserDeletedV1(userId=user_id)
    event = CloudEvent(source=SOURCE, type="user.deleted", subject=user_id, data=data.model_dump())
    await enqueue(session, outbox, APIKEY_EVENTS, event)
