"""argon2id hashing through pwdlib, off the event loop and bounded (each hash holds 64 MiB for ~100 ms)."""

from __future__ import annotations

import asyncio

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from services.auth.config import Settings


class Passwords:
    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.argon2_time_cost,
                    memory_cost=settings.argon2_memory_kib,
                    parallelism=settings.argon2_parallelism,
                ),
            )
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_hashes)
        # Verified when the e-mail is unknown, so a miss costs as much as a hit (no account enumeration by timing).
        self._dummy_hash = self.hasher.hash("dummy-password-for-timing-equalisation")

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> tuple[bool, str | None]:
        """(valid, new hash if the parameters changed and the hash should be replaced)."""
        async with self._slots:
            if stored_hash is None:
                await asyncio.to_thread(self.hasher.verify, password, self._dummy_hash)
                return False, None
            return await asyncio.to_thread(self.hasher.verify_and_update, password, stored_hash)
