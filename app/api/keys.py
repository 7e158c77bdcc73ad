"""Client keys: made (the key shown once), listed (never the key), revoked; API token only."""

from __future__ import annotations

import secrets

from fastapi import Response
from sqlalchemy import func, insert, literal, select, update

from app.api.deps import (
    CLIENT_KEY_PREFIX,
    INVALID_PARAMS,
    EngineDep,
    Responses,
    admin_router,
    client_key_hash,
    error,
    unknown_client,
)
from app.api.errors import ApiError
from app.api.leads import client_exists
from app.models import client_keys, clients
from app.models.api import ClientKeyCreated, ClientKeyList, ClientKeyOut

router = admin_router(prefix="/api/clients/{client_id}/keys", tags=["clients"])

ONE_CLIENT: Responses = {
    **INVALID_PARAMS,
    404: error("No client with this id (`unknown_client`), or a client key not of this client."),
}
ONE_KEY: Responses = {
    **INVALID_PARAMS,
    404: error("No client (`unknown_client`) or no key of it (`unknown_key`) with this id."),
}


@router.post("", status_code=201, response_model=ClientKeyCreated, responses=ONE_CLIENT)
async def create_key(client_id: str, engine: EngineDep) -> ClientKeyCreated:
    """Make a key for the client: `hk_…`, in this answer only, since only its hash is kept."""
    key = CLIENT_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = f"key_{secrets.token_hex(10)}"
    async with engine.begin() as conn:
        # Inserted only if the client exists: no row back means an unknown client.
        created_at = await conn.scalar(
            insert(client_keys)
            .from_select(
                ["id", "client_id", "hash", "last4"],
                select(
                    literal(key_id), clients.c.id, literal(client_key_hash(key)), literal(key[-4:])
                ).where(clients.c.id == client_id),
            )
            .returning(client_keys.c.created_at)
        )
    if created_at is None:
        raise unknown_client()
    return ClientKeyCreated(id=key_id, key=key, client_id=client_id, created_at=created_at)


@router.get("", response_model=ClientKeyList, responses=ONE_CLIENT)
async def list_keys(client_id: str, engine: EngineDep) -> ClientKeyList:
    """The client's keys, revoked ones included, oldest first; never a key itself."""
    query = (
        select(
            client_keys.c.id,
            client_keys.c.client_id,
            client_keys.c.last4,
            client_keys.c.created_at,
            client_keys.c.revoked_at,
        )
        .where(client_keys.c.client_id == client_id)
        .order_by(client_keys.c.created_at, client_keys.c.id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        if not rows and not await client_exists(conn, client_id):
            raise unknown_client()
    return ClientKeyList(keys=[ClientKeyOut.model_validate(r, from_attributes=True) for r in rows])


@router.delete("/{key_id}", status_code=204, response_class=Response, responses=ONE_KEY)
async def revoke_key(client_id: str, key_id: str, engine: EngineDep) -> Response:
    """Revoke a key: the next request made with it is refused (401). Revoking twice is a 204
    that keeps the first `revoked_at`."""
    statement = (
        update(client_keys)
        .where(client_keys.c.id == key_id, client_keys.c.client_id == client_id)
        .values(revoked_at=func.coalesce(client_keys.c.revoked_at, func.now()))
    )
    async with engine.begin() as conn:
        revoked = await conn.scalar(statement.returning(client_keys.c.id))
        if revoked is None:
            if not await client_exists(conn, client_id):
                raise unknown_client()
            raise ApiError(404, "unknown_key", "No key with this id for this client.")
    return Response(status_code=204)
