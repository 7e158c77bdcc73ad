"""Jobs call their client's own provider accounts: syncs, sends and scoring, each against the
client's sandbox with the client's key; the global settings for a client without one; an
account that cannot be decrypted fails the attempt; rotation keeps every account working."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

from cryptography.fernet import Fernet

from tests.accounts import fernet_key, put_account, sandbox_account
from tests.conftest import WEBHOOK_SECRET
from tests.support import ROOT, seed, settings_env, signed

CHANNELS = ("sms", "email", "ai")


async def sync(service, client_id: str) -> dict:
    response = await service.api.post("/sync", json={"client_id": client_id})
    assert response.status_code == 202, response.text
    return await service.run_jobs()


async def job_rows(db, type: str = "conversation_sync") -> list:
    return await db.fetch("SELECT * FROM jobs WHERE type = $1 ORDER BY id", type)


async def stored_count(db, client_id: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM messages m JOIN leads l ON l.id = m.lead_id WHERE l.client_id = $1",
        client_id,
    )


def calls(state) -> int:
    return sum(state.count(channel, kind) for channel in CHANNELS for kind in ("list", "send"))


async def test_each_clients_sync_calls_its_own_account(start_service, sandbox, db, logs):
    global_state, _ = sandbox
    service = start_service(encryption_keys=fernet_key())
    await seed(service, "acme", leads=3)
    await seed(service, "beta", leads=2)
    with sandbox_account() as a, sandbox_account() as b:
        for channel in ("sms", "email"):
            await put_account(service, "acme", channel, a.body(channel))
            await put_account(service, "beta", channel, b.body(channel))

        summary = await sync(service, "acme")
        assert summary["failed"] == summary["retried"] == 0, summary
        # A wrong key would be a 401 there: each call reached acme's sandbox with acme's key.
        assert a.state.count("sms", "list") >= 3 and a.state.count("email", "list") >= 3
        assert calls(b.state) == 0 and calls(global_state) == 0
        acme_calls = calls(a.state)

        summary = await sync(service, "beta")
        assert summary["failed"] == summary["retried"] == 0, summary
        assert b.state.count("sms", "list") >= 2 and b.state.count("email", "list") >= 2
        assert calls(a.state) == acme_calls and calls(global_state) == 0

    assert all(job["status"] == "succeeded" for job in await job_rows(db))
    assert await stored_count(db, "acme") > 0 and await stored_count(db, "beta") > 0
    for line in logs.lines:
        assert a.key not in line and b.key not in line


async def test_sends_and_scoring_use_the_clients_account(start_service, sandbox, db):
    global_state, _ = sandbox
    service = start_service(encryption_keys=fernet_key())
    [lead] = await seed(service, "acme", leads=1)
    with sandbox_account() as a:
        for channel in CHANNELS:
            await put_account(service, "acme", channel, a.body(channel))
        steps = [{"after_s": 0, "channel": "sms", "text": "Still looking?"}]
        created = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
        assert created.status_code == 201, created.text
        assert (await service.cron.get("/api/cron/followups")).status_code == 202
        await service.run_jobs()
        [sent] = a.state.sent.values()
        assert sent["target"] == f"c-{lead}" and sent["body"] == "Still looking?"

        body = json.dumps(
            {
                "type": "email.received",
                "data": {
                    "client_id": "acme",
                    "message_id": "m-1",
                    "email_lead_id": f"e-{lead}",
                    "from": "Ada <ada@example.com>",
                    "subject": "Re: viewing",
                    "text": "Thursday works for me.",
                    "received_at": datetime.now(UTC).isoformat(),
                },
            }
        ).encode()
        headers = signed(WEBHOOK_SECRET, body, msg_id="delivery-1")
        assert (
            await service.anon.post("/webhooks/email", content=body, headers=headers)
        ).is_success
        summary = await service.run_jobs()
        assert summary["failed"] == 0, summary
        assert a.state.count("ai", "score") == 1
    assert await db.fetchval("SELECT score FROM leads WHERE id = $1", lead) is not None
    assert global_state.sent == {} and calls(global_state) == global_state.count("ai", "score") == 0


async def test_a_change_takes_effect_and_delete_goes_back_to_the_global_account(
    start_service, sandbox, db
):
    global_state, _ = sandbox
    key = fernet_key()
    service = start_service(encryption_keys=key)
    other_process = start_service(encryption_keys=key)
    await seed(service, "acme", leads=1)
    lead_sync = {"client_id": "acme", "lead_id": "acme-lead-0", "channels": ["sms"]}

    async def sync_lead(runner) -> None:
        assert (await service.api.post("/sync", json=lead_sync)).status_code == 202
        summary = await runner.run_jobs()
        assert summary["failed"] == summary["retried"] == 0, summary

    with sandbox_account() as a, sandbox_account() as b:

        def reached() -> tuple[bool, bool, bool]:
            """Which of a, b and the global sandbox the last sync reached."""
            counts = [state.count("sms", "list") for state in (a.state, b.state, global_state)]
            changed = tuple(now > then for now, then in zip(counts, seen, strict=True))
            seen[:] = counts
            return changed

        seen = [0, 0, 0]
        await put_account(service, "acme", "sms", a.body("sms"))
        await sync_lead(other_process)
        assert reached() == (True, False, False)
        # Changed through one process: that one uses the change at once, the other within
        # a second (its cache).
        await put_account(service, "acme", "sms", b.body("sms"))
        await sync_lead(service)
        assert reached() == (False, True, False)
        await asyncio.sleep(1.1)
        await sync_lead(other_process)
        assert reached() == (False, True, False)

        assert (await service.api.delete("/api/clients/acme/providers/sms")).status_code == 204
        await sync_lead(service)
        assert reached() == (False, False, True)


async def test_an_account_that_cannot_be_decrypted_fails_without_falling_back(
    start_service, sandbox, db
):
    global_state, _ = sandbox
    keyed = start_service(encryption_keys=fernet_key())
    await seed(keyed, "acme", leads=1)
    with sandbox_account() as a:
        await put_account(keyed, "acme", "sms", a.body("sms"))
        for keys in (fernet_key(), None):
            service = start_service(encryption_keys=keys)
            await db.execute("DELETE FROM jobs")
            lead_sync = {"client_id": "acme", "lead_id": "acme-lead-0", "channels": ["sms"]}
            assert (await service.api.post("/sync", json=lead_sync)).status_code == 202
            summary = await service.run_jobs()
            assert summary["retried"] == 1 and summary["processed"] == 1, summary
            [job] = await job_rows(db)
            assert job["status"] == "pending" and job["attempts"] == 1
            reason = "none of ENCRYPTION_KEYS decrypts it" if keys else "ENCRYPTION_KEYS is not set"
            assert job["last_error"] == (
                f"sms provider: the client's account cannot be decrypted ({reason})"
            )
        assert calls(a.state) == 0
    assert calls(global_state) == 0


async def accounts(db) -> list:
    return await db.fetch("SELECT client_id, channel, secrets FROM provider_accounts")


def rotate(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own interpreter, fixed arguments)
        [sys.executable, "-m", "app.accounts", "rotate", *args],
        cwd=ROOT,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_rotation_keeps_every_account_working(start_service, make_settings, sandbox, db):
    global_state, _ = sandbox
    old, new = fernet_key(), fernet_key()
    before = start_service(encryption_keys=old)
    await seed(before, "acme", leads=1)
    await seed(before, "beta", leads=1)
    with sandbox_account() as a, sandbox_account() as b:
        for channel in CHANNELS:
            await put_account(before, "acme", channel, a.body(channel))
            await put_account(before, "beta", channel, b.body(channel))
        tokens = {(r["client_id"], r["channel"]): r["secrets"] for r in await accounts(db)}

        # A new key in front: the old one still decrypts; a rotation re-encrypts under the new.
        both = make_settings(encryption_keys=f"{new},{old}")
        first = rotate(both, "--batch", "4")
        assert first.returncode == 0, first.stderr
        assert first.stdout.startswith("rotated 6 accounts; 0 already under the first key;")
        again = rotate(both)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("rotated 0 accounts; 6 already under the first key;")
        rows = await accounts(db)
        assert len(rows) == 6
        for row in rows:
            assert row["secrets"] != tokens[(row["client_id"], row["channel"])]
            Fernet(new).decrypt(row["secrets"].encode())

        # The old key dropped: every account still works, through a real sync.
        after = start_service(encryption_keys=new)
        for client_id, account in (("acme", a), ("beta", b)):
            response = await after.api.get(f"/api/clients/{client_id}/providers/email")
            assert response.status_code == 200, response.text
            assert response.json()["secrets"] == {"key": "…" + account.key[-4:]}
            summary = await sync(after, client_id)
            assert summary["failed"] == summary["retried"] == 0, summary
            assert (
                account.state.count("sms", "list") > 0 and account.state.count("email", "list") > 0
            )
        # The old key alone reads none of them any more.
        stale = start_service(encryption_keys=old)
        response = await stale.api.get("/api/clients/acme/providers/sms")
        assert response.status_code == 503 and response.json()["error"] == "account_unreadable"
    assert calls(global_state) == 0


async def test_rotation_names_accounts_no_key_reads(start_service, make_settings, db):
    lost = start_service(encryption_keys=fernet_key())
    await seed(lost, "acme", leads=0)
    await seed(lost, "beta", leads=0)
    body = {"kind": "generic", "settings": {"url": "https://x.example", "key": "k"}}
    await put_account(lost, "acme", "sms", body)
    key = fernet_key()
    await put_account(start_service(encryption_keys=key), "beta", "sms", body)

    result = rotate(make_settings(encryption_keys=f"{fernet_key()},{key}"))
    assert result.returncode == 1
    assert result.stdout.startswith("rotated 1 accounts; 0 already under the first key; 1 unread")
    assert result.stderr.strip() == "unreadable with ENCRYPTION_KEYS: client acme, sms"

    unset = rotate(make_settings(encryption_keys=None))
    assert unset.returncode == 2 and "ENCRYPTION_KEYS is not set" in unset.stderr


async def test_a_clients_rate_per_min_spaces_its_calls_and_a_429_holds_them_off(
    start_service, sandbox, db
):
    global_state, _ = sandbox
    service = start_service(encryption_keys=fernet_key(), runner_concurrency=8)
    await seed(service, "acme", leads=4)
    with sandbox_account() as a:
        account = await put_account(service, "acme", "sms", a.body("sms", rate_per_min=120))
        assert account["settings"]["rate_per_min"] == 120
        # The first call is refused with Retry-After 2: no call of the account before then.
        a.state.add_fault("sms", "rate_limit", times=1, retry_after=2)
        response = await service.api.post("/sync", json={"client_id": "acme"})
        assert response.status_code == 202
        deadline = asyncio.get_running_loop().time() + 60
        while await db.fetchval(
            "SELECT count(*) FROM jobs WHERE status <> 'succeeded' AND status <> 'failed'"
        ):
            assert asyncio.get_running_loop().time() < deadline, "the syncs did not finish"
            await service.run_jobs(budget_s=5)
            await asyncio.sleep(0.2)
        times = a.state.call_times("sms", "list")

    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'") == 0
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # 120 a minute: a token every 0.5 s (and 3 % more), less what the calls' own latency on
    # a busy machine moves them (unlimited, they would come together).
    assert min(gaps) >= 0.5 - 0.2, gaps
    # The first call drew the 429: its Retry-After held the account for 2 s. Only a call that
    # had already reserved its token may go meanwhile (at 0.5 s, 1.0 s and 1.5 s they would
    # without it); the margin is for the calls' own latency, not for the hold.
    assert len(times) >= 5, times
    held_off = [t - times[0] for t in times[1:] if t < times[0] + 2 - 0.1]
    assert len(held_off) <= 1, (held_off, gaps)
    # Throttled attempts were given back: only the 429's attempt was used up.
    attempts = await db.fetch("SELECT attempts FROM jobs WHERE payload->>'channel' = 'sms'")
    assert sorted(r["attempts"] for r in attempts) == [1, 1, 1, 2]
    assert calls(global_state) == global_state.count("email", "list")
