"""PUT/GET/DELETE /api/clients/{client_id}/providers/{channel}: accounts stored encrypted under
ENCRYPTION_KEYS, answered without their secrets; /webhooks/email/{client_id} verified with the
client's own signing secret."""

from __future__ import annotations

import json
import logging
import stat
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet, InvalidToken

from app.local import local_encryption_key
from app.settings import Settings
from app.telemetry import JsonFormatter, register_secrets
from tests.accounts import fernet_key, put_account, webhook_secret
from tests.conftest import WEBHOOK_SECRET
from tests.support import assert_error, seed, signed

KEY = fernet_key()
SMS_KEY = "sk_live_sms_5up3r-s3cr3t-7a1L"
EMAIL_KEY = "em_live_also-very-secret_9Qz4"
AI_KEY = "sk-ai-0123456789-secret-Xy7w"
SHORT_KEY = "tiny-k3y"
SIGNING = webhook_secret()
ACCOUNT_SECRETS = (SMS_KEY, EMAIL_KEY, AI_KEY, SHORT_KEY, SIGNING, SIGNING.removeprefix("whsec_"))

SMS = {"kind": "generic", "settings": {"url": "https://sms.example.com/api/", "key": SMS_KEY}}
EMAIL = {
    "kind": "generic",
    "settings": {"url": "https://mail.example.com", "key": EMAIL_KEY, "webhook_secret": SIGNING},
}
AI = {
    "kind": "generic",
    "settings": {"url": "http://127.0.0.1:9/v1", "key": AI_KEY, "model": "gpt-4o-mini"},
}


def path(client_id: str = "acme", channel: str = "sms") -> str:
    return f"/api/clients/{client_id}/providers/{channel}"


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in ACCOUNT_SECRETS:
            assert secret not in text, f"a secret in: {text[:300]}"


@pytest.fixture
async def keyed(start_service):
    """The service with ENCRYPTION_KEYS set, and client acme."""
    service = start_service(encryption_keys=KEY)
    await seed(service, leads=0)
    return service


async def test_put_answers_what_get_answers_and_delete_goes_back(keyed, logs):
    answer = await put_account(keyed, "acme", "sms", SMS)
    assert answer["client_id"] == "acme" and answer["channel"] == "sms"
    assert answer["kind"] == "generic"
    assert answer["settings"] == {"url": "https://sms.example.com/api"}
    assert answer["secrets"] == {"key": "…" + SMS_KEY[-4:]}
    assert datetime.fromisoformat(answer["updated_at"]) <= datetime.now(UTC)
    fetched = await keyed.api.get(path())
    assert fetched.status_code == 200 and fetched.json() == answer

    email = await put_account(keyed, "acme", "email", EMAIL)
    assert email["settings"] == {"url": "https://mail.example.com"}
    assert email["secrets"] == {"key": "…" + EMAIL_KEY[-4:], "webhook_secret": "…" + SIGNING[-4:]}
    ai = await put_account(keyed, "acme", "ai", AI)
    assert ai["settings"] == {"url": "http://127.0.0.1:9/v1", "model": "gpt-4o-mini"}
    assert ai["secrets"] == {"key": "…" + AI_KEY[-4:]}

    # A replacement: a short secret shows nothing of itself, and the time moves on.
    short = {"kind": "generic", "settings": {"url": "https://sms2.example.com", "key": SHORT_KEY}}
    replaced = await put_account(keyed, "acme", "sms", short)
    assert replaced["secrets"] == {"key": "…"}
    assert replaced["updated_at"] > answer["updated_at"]
    assert (await keyed.api.get(path())).json() == replaced

    deleted = await keyed.api.delete(path())
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(await keyed.api.get(path()), 404, "no_account")
    assert (await keyed.api.delete(path())).status_code == 204
    # The other channels are untouched.
    assert (await keyed.api.get(path(channel="email"))).json() == email

    assert_no_secret(*logs.lines)
    assert logs.errors() == []


async def test_unknown_client_and_channel(keyed, db):
    for method in ("PUT", "GET", "DELETE"):
        response = await keyed.api.request(method, path("nobody"), json=SMS)
        assert_error(response, 404, "unknown_client")
        assert_error(await keyed.api.request(method, path(channel="fax"), json=SMS), 422)
        assert_error(await keyed.api.request(method, path("bad id!"), json=SMS), 422)
    assert await db.fetchval("SELECT count(*) FROM provider_accounts") == 0


async def test_only_the_api_token_opens_the_routes(keyed):
    for method in ("PUT", "GET", "DELETE"):
        response = await keyed.anon.request(method, path(), json=SMS)
        assert_error(response, 401, "unauthorized")


BAD_BODIES = {
    "unknown kind": {
        "kind": "twilio-ish",
        "settings": {"url": "https://x.example", "key": SMS_KEY},
    },
    "no kind": {"settings": {"url": "https://x.example", "key": SMS_KEY}},
    "settings not an object": {"kind": "generic", "settings": SMS_KEY},
    "no key": {"kind": "generic", "settings": {"url": "https://x.example"}},
    "empty key": {"kind": "generic", "settings": {"url": "https://x.example", "key": ""}},
    "key with a space": {
        "kind": "generic",
        "settings": {"url": "https://x", "key": SMS_KEY + " x"},
    },
    "key not ascii": {"kind": "generic", "settings": {"url": "https://x", "key": SMS_KEY + "é"}},
    "key not a string": {"kind": "generic", "settings": {"url": "https://x", "key": 1234567}},
    "no url": {"kind": "generic", "settings": {"key": SMS_KEY}},
    "ftp url": {"kind": "generic", "settings": {"url": "ftp://x.example", "key": SMS_KEY}},
    "url with a secret in it": {
        "kind": "generic",
        "settings": {"url": f"https://user:{SMS_KEY}@x.example", "key": SMS_KEY},
    },
    "url without a host": {"kind": "generic", "settings": {"url": "https://", "key": SMS_KEY}},
    "url with a bad port": {"kind": "generic", "settings": {"url": "http://x:99999", "key": "k"}},
    "unknown field": {
        "kind": "generic",
        "settings": {"url": "https://x", "key": "k", "k2": SMS_KEY},
    },
    "extra top-level field": {**SMS, "key": SMS_KEY},
}
BAD_EMAIL_BODIES = {
    "webhook secret not whsec": {
        "kind": "generic",
        "settings": {"url": "https://x", "key": "k", "webhook_secret": EMAIL_KEY},
    },
    "webhook secret too short": {
        "kind": "generic",
        "settings": {"url": "https://x", "key": "k", "webhook_secret": "whsec_" + "QUJD" * 4},
    },
}


async def test_bad_bodies_are_422_naming_fields_never_values(keyed, db, logs):
    wrong = {}
    cases = [("sms", name, body) for name, body in BAD_BODIES.items()]
    cases += [("email", name, body) for name, body in BAD_EMAIL_BODIES.items()]
    cases += [("ai", "ai without model", {"kind": "generic", "settings": SMS["settings"]})]
    for channel, name, body in cases:
        response = await keyed.api.put(path(channel=channel), json=body)
        try:
            assert_error(response, 422)
            assert_no_secret(response.text)
            assert "é" not in response.text and "1234567" not in response.text
        except AssertionError as failure:
            wrong[name] = (response.status_code, response.text[:300], str(failure)[:200])
    assert wrong == {}
    detail = (await keyed.api.put(path(), json=BAD_BODIES["no key"])).json()["detail"]
    assert detail == "settings.key: Field required"
    assert await db.fetchval("SELECT count(*) FROM provider_accounts") == 0
    assert_no_secret(*logs.lines)


async def test_secrets_are_unreadable_in_the_database(keyed, db):
    await put_account(keyed, "acme", "sms", SMS)
    await put_account(keyed, "acme", "email", EMAIL)
    rows = await db.fetch("SELECT p::text AS whole, secrets FROM provider_accounts AS p")
    assert len(rows) == 2
    for row in rows:
        assert_no_secret(row["whole"])
        # Nor in an encoding of it: the token is Fernet's own (version byte 0x80).
        assert row["secrets"].startswith("gAAAAA")
        with pytest.raises(InvalidToken):
            Fernet(fernet_key()).decrypt(row["secrets"].encode())
    token = await db.fetchval("SELECT secrets FROM provider_accounts WHERE channel = 'email'")
    assert json.loads(Fernet(KEY).decrypt(token.encode())) == {
        "key": EMAIL_KEY,
        "webhook_secret": SIGNING,
    }


async def test_without_encryption_keys_accounts_cannot_be_stored(start_service, db):
    service = start_service(encryption_keys=None)
    await seed(service, leads=0)
    for method in ("PUT", "GET"):
        body = assert_error(await service.api.request(method, path(), json=SMS), 503)
        assert body["error"] == "not_configured" and "ENCRYPTION_KEYS" in body["detail"]
    assert await db.fetchval("SELECT count(*) FROM provider_accounts") == 0
    # Deleting needs no key.
    assert (await service.api.delete(path())).status_code == 204


async def test_an_account_under_another_key_is_not_readable(start_service, keyed, logs):
    await put_account(keyed, "acme", "sms", SMS)
    stranger = start_service(encryption_keys=fernet_key())
    body = assert_error(await stranger.api.get(path()), 503, "account_unreadable")
    assert "ENCRYPTION_KEYS" in body["detail"]
    # Still replaceable (under the new key) and removable.
    replaced = await put_account(stranger, "acme", "sms", SMS)
    assert replaced["secrets"] == {"key": "…" + SMS_KEY[-4:]}
    assert_error(await keyed.api.get(path()), 503, "account_unreadable")
    assert_no_secret(*logs.lines)


def test_invalid_encryption_keys_stop_start_up_without_echoing_them():
    from tests.test_settings import import_app

    bad = "x" * 40
    result = import_app(ENCRYPTION_KEYS=f"{KEY},{bad}")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "ENCRYPTION_KEYS" in line and "key 2" in line, line
    assert bad not in line and KEY not in line


def test_encryption_keys_are_masked_in_log_lines():
    other = fernet_key()
    register_secrets(Settings(_env_file=None, encryption_keys=f" {KEY} ,{other}"))
    record = logging.makeLogRecord({"msg": f"keys {KEY} and {other}", "args": ()})
    line = JsonFormatter().format(record)
    assert KEY not in line and other not in line and "[secret]" in line


def test_the_local_run_makes_its_key_once(tmp_path):
    data = tmp_path / "data"
    first = local_encryption_key(data)
    Fernet(first)
    assert local_encryption_key(data) == first
    assert stat.S_IMODE((data / "encryption.key").stat().st_mode) == 0o600


# --- /webhooks/email/{client_id} ----------------------------------------------------------


def delivery(message_id: str = "msg-1", **data: object) -> bytes:
    body = {
        "message_id": message_id,
        "from": "Zelda Quux <zelda.quux@example.org>",
        "subject": "Pineapple marmalade",
        "text": "Ring me next Tuesday.",
        "received_at": "2024-05-01T12:34:56+00:00",
        **data,
    }
    return json.dumps({"type": "email.received", "data": body}).encode()


async def post(service, url: str, secret: str, body: bytes, msg_id: str = "d-1"):
    return await service.anon.post(url, content=body, headers=signed(secret, body, msg_id=msg_id))


async def test_a_clients_route_takes_its_own_signature_only(keyed, db, sandbox, logs):
    await put_account(keyed, "acme", "email", EMAIL)
    await seed(keyed, "beta", leads=0)
    no_hook = {"kind": "generic", "settings": {"url": "https://x.example", "key": "k"}}
    await put_account(keyed, "beta", "email", no_hook)

    accepted = await post(keyed, "/webhooks/email/acme", SIGNING, delivery())
    assert accepted.status_code == 202, accepted.text
    [job] = await db.fetch("SELECT id, client_id, payload FROM jobs WHERE type = 'email_inbound'")
    assert str(job["id"]) == accepted.json()["job_id"] and job["client_id"] == "acme"
    assert json.loads(job["payload"])["client_id"] == "acme"
    # data.client_id may be given when it names the path's client.
    named = await post(keyed, "/webhooks/email/acme", SIGNING, delivery(client_id="acme"), "d-2")
    assert named.status_code == 202, named.text

    # The same answer whenever the signature cannot be checked: the global secret on the
    # client's route, the client's secret on another client's (with none, or unknown) route.
    refusals = [
        await post(keyed, "/webhooks/email/acme", WEBHOOK_SECRET, delivery(), "d-3"),
        await post(keyed, "/webhooks/email/beta", SIGNING, delivery(), "d-4"),
        await post(keyed, "/webhooks/email/nobody", SIGNING, delivery(), "d-5"),
        await post(keyed, "/webhooks/email", SIGNING, delivery(client_id="acme"), "d-6"),
    ]
    for response in refusals:
        assert_error(response, 401, "invalid_signature")
    assert len({r.text for r in refusals}) == 1

    # The global route still takes the global secret.
    glob = await post(keyed, "/webhooks/email", WEBHOOK_SECRET, delivery(client_id="acme"), "d-7")
    assert glob.status_code == 202, glob.text

    other = await post(keyed, "/webhooks/email/acme", SIGNING, delivery(client_id="beta"), "d-8")
    assert_error(other, 422, "validation_error")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'email_inbound'") == 3

    # The delivery is processed for the client: stored on its lead, scored.
    summary = await keyed.run_jobs()
    assert summary["failed"] == 0, summary
    stored = await db.fetch(
        "SELECT l.client_id FROM messages m JOIN leads l ON l.id = m.lead_id"
        " WHERE m.direction = 'inbound'"
    )
    assert [r["client_id"] for r in stored] == ["acme"]
    assert_no_secret(*logs.lines)


async def test_a_clients_route_without_encryption_keys_is_503(start_service):
    service = start_service(encryption_keys=None)
    await seed(service, leads=0)
    response = await post(service, "/webhooks/email/acme", SIGNING, delivery())
    body = assert_error(response, 503, "not_configured")
    assert "ENCRYPTION_KEYS" in body["detail"]


async def test_a_clients_route_whose_account_cannot_be_read_refuses(start_service, keyed, logs):
    await put_account(keyed, "acme", "email", EMAIL)
    stranger = start_service(encryption_keys=fernet_key())
    response = await post(stranger, "/webhooks/email/acme", SIGNING, delivery())
    assert_error(response, 401, "invalid_signature")
    warned = [r for r in logs.records() if "cannot be read" in r["msg"]]
    assert warned and warned[0]["client_id"] == "acme"
