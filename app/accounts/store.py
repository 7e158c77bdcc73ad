"""Provider accounts in the database: one row per (client, channel), the kind's non-secret
fields as JSON, its secret fields as one Fernet token of their JSON.

Nothing here logs, and no error raised here quotes a value: an account's secrets exist in the
clear only inside the kind model (`SecretStr`, masked in any repr) and the provider client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken, MultiFernet
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts.kinds import AccountKind, ProviderChannel, kind_for
from app.models.tables import provider_accounts


class AccountUnreadable(Exception):
    """A stored account that cannot be read: no ENCRYPTION_KEYS, none of them decrypts it, or a
    kind this version does not know. The message names which, never a value."""


@dataclass(frozen=True)
class StoredAccount:
    client_id: str
    channel: ProviderChannel
    kind: str
    values: AccountKind
    updated_at: datetime


def encrypt_secrets(fernet: MultiFernet, values: AccountKind) -> str:
    """The account's secret fields as one Fernet token (under the first key)."""
    return fernet.encrypt(json.dumps(values.secret_values()).encode()).decode()


def decrypt_secrets(fernet: MultiFernet | None, token: str) -> dict[str, Any]:
    if fernet is None:
        raise AccountUnreadable("ENCRYPTION_KEYS is not set")
    try:
        return json.loads(fernet.decrypt(token.encode()))
    except (InvalidToken, ValueError):
        raise AccountUnreadable("none of ENCRYPTION_KEYS decrypts it") from None


def read_account(
    fernet: MultiFernet | None,
    client_id: str,
    channel: ProviderChannel,
    kind: str,
    settings: dict[str, Any],
    token: str,
    updated_at: datetime,
) -> StoredAccount:
    """A row as a StoredAccount, its secrets decrypted and its fields checked again."""
    model = kind_for(channel, kind)
    if model is None:
        raise AccountUnreadable(f"its kind {kind!r} is not known to this version")
    secrets = decrypt_secrets(fernet, token)
    try:
        values = model.model_validate({**settings, **secrets})
    except ValidationError:
        raise AccountUnreadable(f"its fields no longer fit the kind {kind!r}") from None
    return StoredAccount(client_id, channel, kind, values, updated_at)


async def load_account(
    conn: AsyncConnection, fernet: MultiFernet | None, client_id: str, channel: ProviderChannel
) -> StoredAccount | None:
    """The client's account on this channel, None when it has none; AccountUnreadable when
    one is stored but cannot be read."""
    row = (
        await conn.execute(
            select(
                provider_accounts.c.kind,
                provider_accounts.c.settings,
                provider_accounts.c.secrets,
                provider_accounts.c.updated_at,
            ).where(
                provider_accounts.c.client_id == client_id,
                provider_accounts.c.channel == channel,
            )
        )
    ).first()
    if row is None:
        return None
    return read_account(
        fernet, client_id, channel, row.kind, row.settings, row.secrets, row.updated_at
    )


async def save_account(
    conn: AsyncConnection,
    fernet: MultiFernet,
    client_id: str,
    channel: ProviderChannel,
    kind: str,
    values: AccountKind,
) -> StoredAccount:
    """Create or replace the client's account on this channel."""
    row = {
        "client_id": client_id,
        "channel": channel,
        "kind": kind,
        "settings": values.public_values(),
        "secrets": encrypt_secrets(fernet, values),
    }
    statement = insert(provider_accounts).values(row)
    statement = statement.on_conflict_do_update(
        index_elements=["client_id", "channel"],
        set_={
            "kind": statement.excluded.kind,
            "settings": statement.excluded.settings,
            "secrets": statement.excluded.secrets,
            "updated_at": func.now(),
        },
    ).returning(provider_accounts.c.updated_at)
    updated_at = (await conn.execute(statement)).scalar_one()
    return StoredAccount(client_id, channel, kind, values, updated_at)


async def delete_account(conn: AsyncConnection, client_id: str, channel: ProviderChannel) -> bool:
    """Remove the client's account on this channel; whether there was one."""
    result = await conn.execute(
        delete(provider_accounts).where(
            provider_accounts.c.client_id == client_id, provider_accounts.c.channel == channel
        )
    )
    return result.rowcount > 0
