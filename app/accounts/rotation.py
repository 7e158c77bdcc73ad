"""Re-encrypting every stored account under the first of ENCRYPTION_KEYS.

The procedure (README, "Rotating ENCRYPTION_KEYS"): put a new key in front, deploy, run
`python -m app.accounts rotate`, then drop the old key. Accounts are read in batches in key
order, each batch in a transaction of its own; one already under the first key is left alone,
so a second run changes nothing. A row is written back only if it still holds the token that
was read, so an account stored meanwhile (already under the first key) is never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models.tables import provider_accounts

BATCH = 500


@dataclass
class Rotation:
    """What a rotation did: accounts re-encrypted, already current, and those no key reads."""

    rotated: int = 0
    current: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


async def rotate_accounts(engine: AsyncEngine, keys: list[str], *, batch: int = BATCH) -> Rotation:
    """Re-encrypt every account not yet under `keys[0]`; decryptable by any of `keys`."""
    first = Fernet(keys[0])
    every = MultiFernet([Fernet(key) for key in keys])
    pk = tuple_(provider_accounts.c.client_id, provider_accounts.c.channel)
    write = (
        update(provider_accounts)
        .where(
            provider_accounts.c.client_id == bindparam("c_id"),
            provider_accounts.c.channel == bindparam("c_channel"),
            provider_accounts.c.secrets == bindparam("old"),
        )
        .values(secrets=bindparam("new"))
    )
    result = Rotation()
    after: tuple[str, str] = ("", "")
    while True:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(
                        provider_accounts.c.client_id,
                        provider_accounts.c.channel,
                        provider_accounts.c.secrets,
                    )
                    .where(pk > tuple_(*after))
                    .order_by(provider_accounts.c.client_id, provider_accounts.c.channel)
                    .limit(batch)
                )
            ).all()
            changes = []
            for row in rows:
                token = row.secrets.encode()
                try:
                    first.decrypt(token)
                    result.current += 1
                    continue
                except InvalidToken:
                    pass
                try:
                    rotated = every.rotate(token)
                except InvalidToken:
                    result.unreadable.append((row.client_id, row.channel))
                    continue
                changes.append(
                    {
                        "c_id": row.client_id,
                        "c_channel": row.channel,
                        "old": row.secrets,
                        "new": rotated.decode(),
                    }
                )
            if changes:
                await conn.execute(write, changes)
                result.rotated += len(changes)
        if len(rows) < batch:
            return result
        after = (rows[-1].client_id, rows[-1].channel)
