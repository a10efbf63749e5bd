"""The secret keys that sign link tokens, CSRF tokens and sessions.

``GENIE_SECRET_KEY`` (a comma-separated list: the first signs, all verify) wins. Without it a
key is generated once and kept in the database so that restarts and several processes agree;
the caller logs a warning, because anyone who can read the database can then forge links.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.models import Setting

GENERATED_KEY_SETTING = "generated_secret_key"


async def resolve_secret_keys(
    sessionmaker: async_sessionmaker[AsyncSession], configured: tuple[str, ...]
) -> tuple[tuple[str, ...], bool]:
    """``(keys, generated)``: the configured keys, or the stored/generated one."""
    if configured:
        return configured, False
    for _ in range(3):
        try:
            async with sessionmaker.begin() as session:
                stored = await session.get(Setting, GENERATED_KEY_SETTING)
                if stored is not None:
                    return (stored.value,), True
                value = secrets.token_urlsafe(48)
                session.add(Setting(key=GENERATED_KEY_SETTING, value=value))
            return (value,), True
        except IntegrityError:  # another process generated it at the same moment: read theirs
            continue
    raise RuntimeError("could not store the generated secret key")


async def secret_keys_in(session: AsyncSession, configured: tuple[str, ...]) -> tuple[str, ...]:
    """The same keys, inside a caller's transaction (the CLI signs invitation links)."""
    if configured:
        return configured
    stored = await session.get(Setting, GENERATED_KEY_SETTING)
    if stored is None:
        stored = Setting(key=GENERATED_KEY_SETTING, value=secrets.token_urlsafe(48))
        session.add(stored)
        await session.flush()
    return (stored.value,)
