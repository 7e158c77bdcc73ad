"""Follow-up sequences end to end: ticks, sends that never double, replies that stop them."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

from tests.conftest import WEBHOOK_SECRET
from tests.support import gather_limited, seed, signed


async def create_sequence(service, lead: str, *after_s: int, channel: str = "sms") -> str:
    steps = [{"after_s": a, "channel": channel, "text": f"step {i}"} for i, a in enumerate(after_s)]
    response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def steps_of(service, followup_id: str) -> list[dict]:
    response = await service.api.get(f"/api/followups/{followup_id}")
    assert response.status_code == 200
    return response.json()["steps"]


async def tick_and_run(service) -> None:
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    await service.run_jobs()


async def away_from_minute_end(margin_s: float = 5) -> None:
    """Wait out the end of a minute, so calls meant for one slot do land in one slot."""
    second = datetime.now(UTC).second + datetime.now(UTC).microsecond / 1e6
    if second > 60 - margin_s:
        await asyncio.sleep(60 - second + 0.1)


async def test_each_step_is_sent_once_in_order_as_it_falls_due(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    followup = await create_sequence(service, lead, 0, 2, 4)
    deadline = time.monotonic() + 30
    while any(s["state"] != "sent" for s in await steps_of(service, followup)):
        assert time.monotonic() < deadline, await steps_of(service, followup)
        await tick_and_run(service)
        await asyncio.sleep(0.3)

    steps = await steps_of(service, followup)
    rows = await db.fetch(
        "SELECT index, due_at, sent_at FROM followup_steps WHERE followup_id = $1 ORDER BY index",
        followup,
    )
    assert all(r["sent_at"] >= r["due_at"] for r in rows), "a step went out before it was due"
    assert [r["sent_at"] for r in rows] == sorted(r["sent_at"] for r in rows)
    assert len(state.sent) == 3 and state.count("sms", "send") == 3
    assert sorted(s["provider_message_id"] for s in steps) == sorted(
        v["id"] for v in state.sent.values()
    )
    outbound = await db.fetch(
        "SELECT text FROM messages WHERE direction = 'outbound' ORDER BY sent_at"
    )
    assert [r["text"] for r in outbound] == ["step 0", "step 1", "step 2"]


async def test_a_reply_between_steps_stops_the_rest(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    await away_from_minute_end(10)
    followup = await create_sequence(service, lead, 0, 3, 6)
    await tick_and_run(service)
    assert [s["state"] for s in await steps_of(service, followup)][0] == "sent"

    event = {
        "type": "email.received",
        "data": {
            "client_id": "acme",
            "message_id": "reply-1",
            "email_lead_id": f"e-{lead}",
            "from": "Lead <lead0@example.net>",
            "subject": "Re",
            "text": "Stop please",
            "received_at": datetime.now(UTC).isoformat(),
        },
    }
    body = json.dumps(event).encode()
    headers = signed(WEBHOOK_SECRET, body, msg_id="wh-reply")
    assert (
        await service.anon.post("/webhooks/email", content=body, headers=headers)
    ).status_code == 202
    await service.run_jobs()
    assert [s["state"] for s in await steps_of(service, followup)] == ["sent", "stopped", "stopped"]

    # The sends already enqueued for steps 2 and 3 re-check and send nothing when they run.
    await db.execute("UPDATE jobs SET run_at = now() WHERE type = 'followup_send'")
    await service.run_jobs()
    assert len(state.sent) == 1 and state.count("sms", "send") == 1
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'") == 0


async def test_duplicate_cron_calls_and_overlapping_runners_send_each_step_once(
    start_service, sandbox, db
):
    state, _ = sandbox
    runners = [start_service() for _ in range(3)]
    leads = await seed(runners[0], leads=30)
    for lead in leads:
        await create_sequence(runners[0], lead, 0, 0)
    await away_from_minute_end()
    answers = await gather_limited(
        20, [runners[i % 3].cron.get("/api/cron/followups") for i in range(20)]
    )
    assert {r.status_code for r in answers} == {202}
    assert len({r.json()["job_id"] for r in answers}) == 1

    summaries = await asyncio.gather(*(r.run_jobs() for r in runners))
    assert sum(s["failed"] for s in summaries) == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'followups_tick'") == 1
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'followup_send'") == 60
    assert state.count("sms", "send") == 60 and len(state.sent) == 60
    assert await db.fetchval("SELECT count(*) FROM messages WHERE direction = 'outbound'") == 60
    assert await db.fetchval("SELECT count(*) FROM followup_steps WHERE state = 'sent'") == 60


async def test_a_send_timed_out_after_the_provider_accepted_it_is_not_repeated(
    start_service, sandbox, db
):
    state, _ = sandbox
    service = start_service(provider_timeout_s=1)
    [lead] = await seed(service, leads=1)
    followup = await create_sequence(service, lead, 0)
    state.add_fault("sms", "accept_then_hang", times=1, hang_s=5)
    await tick_and_run(service)
    job = await db.fetchrow("SELECT * FROM jobs WHERE type = 'followup_send'")
    assert job["status"] == "pending" and "timed out" in job["last_error"]

    await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", job["id"])
    await service.run_jobs()
    # Both attempts carried the same Idempotency-Key: the provider kept one message.
    assert state.count("sms", "send") == 2 and len(state.sent) == 1
    [key] = state.sent
    assert key == job["dedupe_key"]
    outbound = await db.fetch(
        "SELECT provider_message_id FROM messages WHERE direction = 'outbound'"
    )
    assert [r["provider_message_id"] for r in outbound] == [state.sent[key]["id"]]
    [step] = await steps_of(service, followup)
    assert step["state"] == "sent" and step["provider_message_id"] == state.sent[key]["id"]


async def test_twenty_thousand_due_steps_fan_out_across_ticks_within_the_timeout(
    start_process_service, sandbox, db
):
    state, _ = sandbox
    # Its own process: 20,000 sends should not share an interpreter with the sandbox. An
    # attempt of 2 s holds no more than the time box's reserve, so every tick hands over after
    # its first batch however fast the machine is: 20 ticks of 1,000 steps, and a 21st that
    # finds none left. One client's sends: its cap is the runner's slots.
    service = await start_process_service(
        job_timeout_s=2, runner_concurrency=16, client_concurrency=16
    )
    leads = await seed(service, leads=100)
    # 200 sequences of 100 steps, all due: written straight to the tables for speed.
    await db.execute(
        """
        INSERT INTO followups (id, lead_id, created_at)
        SELECT 'fu-' || n, 'acme-lead-' || (n % 100), now() - interval '1 minute'
        FROM generate_series(0, 199) AS n
        """
    )
    await db.execute(
        """
        INSERT INTO followup_steps (followup_id, index, after_s, channel, text, due_at)
        SELECT 'fu-' || n, i, 0, 'sms', 'step ' || i, now() - interval '1 minute'
        FROM generate_series(0, 199) AS n, generate_series(0, 99) AS i
        """
    )
    assert len(leads) == 100
    await away_from_minute_end()
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    deadline = time.monotonic() + 240
    while True:
        summary = await service.run_jobs(budget_s=120)
        if summary["remaining_due"] == 0 and summary["stop_reason"] == "drained":
            break
        assert time.monotonic() < deadline

    ticks = await db.fetch(
        "SELECT status, attempts, last_error FROM jobs WHERE type = 'followups_tick'"
    )
    assert len(ticks) == 21, "each tick should have handed over after one batch"
    assert {(t["status"], t["attempts"], t["last_error"]) for t in ticks} == {
        ("succeeded", 1, None)
    }
    errors = await db.fetch("SELECT type, last_error FROM jobs WHERE last_error IS NOT NULL")
    assert errors == []
    assert await db.fetchval("SELECT count(*) FROM followup_steps WHERE state = 'sent'") == 20_000
    assert len(state.sent) == 20_000 and state.count("sms", "send") == 20_000
    assert await db.fetchval("SELECT count(*) FROM messages WHERE direction = 'outbound'") == 20_000
