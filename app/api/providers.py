"""A client's own provider accounts (SMS, email, AI): set, read (secrets as hints), remove.

API token only. Secrets are encrypted under ENCRYPTION_KEYS before they are stored; no answer,
error or log line holds one: a GET shows each as its last 4 characters, and a refused body is
described by field and complaint, never by value.
"""

from __future__ import annotations

import logging
from typing import Annotated

from cryptography.fernet import MultiFernet
from fastapi import Path, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.accounts import (
    KINDS,
    AccountKind,
    AccountUnreadable,
    ProviderChannel,
    StoredAccount,
    delete_account,
    kind_for,
    load_account,
    save_account,
)
from app.api.deps import (
    BODY_ERRORS,
    INVALID_PARAMS,
    EngineDep,
    Responses,
    SettingsDep,
    admin_router,
    error,
)
from app.api.errors import ApiError, describe_validation_error
from app.models.api import Id, ProviderAccountIn, ProviderAccountOut
from app.models.tables import clients
from app.settings import Settings

log = logging.getLogger("handoff.api.providers")

router = admin_router(prefix="/api/clients", tags=["providers"])

PATH = "/{client_id}/providers/{channel}"
# A secret shorter than this is answered as "…" alone: four characters would give too much away.
MIN_HINT_CHARS = 16

ChannelParam = Annotated[ProviderChannel, Path(description="`sms`, `email` or `ai`.")]
UNKNOWN_CLIENT = error("No client with this id (`unknown_client`).")
NOT_CONFIGURED = error(
    "ENCRYPTION_KEYS is not set on this server (`not_configured`), or the database cannot be "
    "reached (`database_unavailable`, with Retry-After)."
)


def hint(secret: str) -> str:
    """What an answer may show of a secret: its last 4 characters, or nothing of a short one."""
    return "…" + secret[-4:] if len(secret) >= MIN_HINT_CHARS else "…"


def account_out(account: StoredAccount) -> ProviderAccountOut:
    return ProviderAccountOut(
        client_id=account.client_id,
        channel=account.channel,
        kind=account.kind,
        settings=account.values.public_values(),
        secrets={name: hint(value) for name, value in account.values.secret_values().items()},
        updated_at=account.updated_at,
    )


def encryption(settings: Settings) -> MultiFernet:
    if settings.encryption is None:
        raise ApiError(
            503,
            "not_configured",
            "ENCRYPTION_KEYS is not set on this server, so provider accounts cannot be stored "
            "or read.",
        )
    return settings.encryption


def parse_values(channel: ProviderChannel, body: ProviderAccountIn) -> AccountKind:
    """The body's settings as the kind's model; 422 naming fields (never values) otherwise."""
    model = kind_for(channel, body.kind)
    if model is None:
        known = ", ".join(sorted(KINDS[channel]))
        raise ApiError(
            422, "validation_error", f"kind: not a kind of {channel} account (known: {known})"
        )
    try:
        return model.model_validate(body.settings)
    except ValidationError as refused:
        details = "; ".join(f"settings.{describe_validation_error(e)}" for e in refused.errors())
        raise ApiError(422, "validation_error", details) from None


async def require_client(conn: AsyncConnection, client_id: str) -> None:
    if await conn.scalar(select(clients.c.id).where(clients.c.id == client_id)) is None:
        raise ApiError(404, "unknown_client", "No client with this id.")


def forget(request: Request, client_id: str, channel: ProviderChannel) -> None:
    """This process's jobs read the changed account at once; other processes within a second."""
    request.app.state.runtime.providers.forget(client_id, channel)


@router.put(
    PATH,
    response_model=ProviderAccountOut,
    responses={**BODY_ERRORS, 404: UNKNOWN_CLIENT, 503: NOT_CONFIGURED},
)
async def put_account(
    client_id: Annotated[Id, Path()],
    channel: ChannelParam,
    body: ProviderAccountIn,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
) -> ProviderAccountOut:
    """Set the client's own account on a channel; its jobs use it from now on."""
    fernet = encryption(settings)
    values = parse_values(channel, body)
    async with engine.begin() as conn:
        await require_client(conn, client_id)
        account = await save_account(conn, fernet, client_id, channel, body.kind, values)
    forget(request, client_id, channel)
    log.info(
        "provider account stored",
        extra={"client_id": client_id, "channel": channel, "kind": body.kind},
    )
    return account_out(account)


ONE_ACCOUNT: Responses = {
    **INVALID_PARAMS,
    404: error(
        "No client with this id (`unknown_client`), or it has no account on this channel "
        "(`no_account`: its jobs use the global settings)."
    ),
    503: error(
        "ENCRYPTION_KEYS is not set (`not_configured`) or does not hold the key the account "
        "was stored under (`account_unreadable`), or the database cannot be reached "
        "(`database_unavailable`, with Retry-After)."
    ),
}


@router.get(PATH, response_model=ProviderAccountOut, responses=ONE_ACCOUNT)
async def get_account(
    client_id: Annotated[Id, Path()],
    channel: ChannelParam,
    engine: EngineDep,
    settings: SettingsDep,
) -> ProviderAccountOut:
    """The client's account on a channel: its kind, its non-secret fields, hints of its secrets."""
    fernet = encryption(settings)
    async with engine.connect() as conn:
        await require_client(conn, client_id)
        try:
            account = await load_account(conn, fernet, client_id, channel)
        except AccountUnreadable as unreadable:
            raise ApiError(
                503, "account_unreadable", f"The account cannot be read: {unreadable}."
            ) from None
    if account is None:
        raise ApiError(
            404,
            "no_account",
            f"This client has no {channel} account; its jobs use the global settings.",
        )
    return account_out(account)


@router.delete(
    PATH,
    status_code=204,
    response_class=Response,
    responses={**INVALID_PARAMS, 404: UNKNOWN_CLIENT},
)
async def delete_provider_account(
    client_id: Annotated[Id, Path()], channel: ChannelParam, request: Request, engine: EngineDep
) -> Response:
    """Remove the client's account on a channel: its jobs go back to the global settings."""
    async with engine.begin() as conn:
        await require_client(conn, client_id)
        removed = await delete_account(conn, client_id, channel)
    forget(request, client_id, channel)
    if removed:
        log.info("provider account removed", extra={"client_id": client_id, "channel": channel})
    return Response(status_code=204)
