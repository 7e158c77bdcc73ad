"""GET /api/clients names the provider kind each of a client's channels goes through."""

from __future__ import annotations

from tests.support import make_client_key, seed

RESEND = {
    "kind": "resend",
    "settings": {"key": "re_0123456789abcdef", "from_address": "Acme <hello@acme.example>"},
}


async def test_clients_list_their_provider_kinds(start_service):
    service = start_service(sms_provider_url="", email_provider_kind="generic")
    await seed(service, leads=0)
    await seed(service, client_id="beta", leads=0)
    response = await service.api.put("/api/clients/acme/providers/email", json=RESEND)
    assert response.status_code == 200, response.text

    listed = {c["id"]: c for c in (await service.api.get("/api/clients")).json()["clients"]}
    assert listed["acme"]["providers"] == {
        "sms": {"kind": None, "account": None},
        "email": {"kind": "resend", "account": "own"},
        "ai": {"kind": "generic", "account": "global"},
    }
    assert listed["beta"]["providers"]["email"] == {"kind": "generic", "account": "global"}

    # A client key sees its own client alone, kinds included (never a setting or a secret).
    key = await make_client_key(service, "acme")
    headers = {"Authorization": f"Bearer {key['key']}"}
    mine = (await service.anon.get("/api/clients", headers=headers)).json()["clients"]
    assert [c["id"] for c in mine] == ["acme"]
    assert "re_0123" not in str(mine) and "hello@acme" not in str(mine)


async def test_a_global_resend_account_is_named(start_service, sandbox):
    _, base = sandbox
    service = start_service(
        email_provider_kind="resend",
        resend_api_key="re_0123456789abcdef",
        resend_from="hello@handoff.example",
        resend_api_url=f"{base}/resend",
    )
    await seed(service, leads=0)
    [client] = (await service.api.get("/api/clients")).json()["clients"]
    assert client["providers"]["email"] == {"kind": "resend", "account": "global"}
