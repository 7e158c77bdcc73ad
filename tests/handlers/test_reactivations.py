"""Reactivation campaigns end to end: cron tick -> enrollments -> one send per inactive lead."""

from __future__ import annotations

TEXT = "It has been a while: reply YES to hear about this month's offers."
# Runner calls allowed to drain one scenario; each drains until nothing is due.
MAX_RUNS = 10


async def add_leads(service, client_id: str, leads: list[dict]) -> None:
    response = await service.api.post("/api/clients", json={"id": client_id, "name": "Acme"})
    assert response.status_code == 200, response.text
    response = await service.api.post("/api/leads", json={"client_id": client_id, "leads": leads})
    assert response.status_code == 200, response.text


async def add_campaign(service, campaign_id: str = "winback", **fields: object) -> None:
    body = {
        "id": campaign_id,
        "client_id": "acme",
        "inactive_days": 30,
        "channel": "sms",
        "text": TEXT,
        **fields,
    }
    response = await service.api.post("/api/reactivations", json=body)
    assert response.status_code == 201, response.text


async def fire_tick(service) -> dict:
    response = await service.cron.get("/api/cron/reactivations")
    assert response.status_code == 202, response.text
    return response.json()


async def drain(service) -> None:
    for _ in range(MAX_RUNS):
        if (await service.run_jobs())["remaining_due"] == 0:
            return
    raise AssertionError(f"jobs still due after {MAX_RUNS} runner calls")


async def fire_next_slot_tick(service, db) -> None:
    """A tick as the next slot would enqueue it: free this slot's key, then call cron again."""
    await db.execute(
        "UPDATE jobs SET dedupe_key = dedupe_key || ':old' WHERE type = 'reactivations_tick'"
    )
    assert (await fire_tick(service))["deduplicated"] is False


async def test_campaign_reaches_each_inactive_lead_once(service, db, sandbox, logs):
    state, _ = sandbox
    ids = [f"lead-{i:04d}" for i in range(1000)]
    await add_leads(service, "acme", [{"id": i, "sms_contact_id": f"c-{i}"} for i in ids])
    active, inactive = ids[0::2], ids[1::2]
    # Active: a message a day ago, either way. Inactive: half only 100-day-old messages, half none.
    await db.execute(
        """
        INSERT INTO messages
            (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)
        SELECT 'acme', id, 'sms', CASE WHEN n % 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'hi',
               'recent-' || id, now() - interval '1 day'
        FROM unnest($1::text[]) WITH ORDINALITY AS a (id, n)
        """,
        active,
    )
    await db.execute(
        """
        INSERT INTO messages
            (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)
        SELECT 'acme', id, 'sms', 'outbound', 'old', 'old-' || id, now() - interval '100 days'
        FROM unnest($1::text[]) AS id
        """,
        inactive[:250],
    )
    await add_campaign(service)

    assert (await fire_tick(service))["deduplicated"] is False
    await drain(service)

    assert state.count("sms", "send") == 500
    assert len(state.sent) == 500
    targets = sorted(sent["target"] for sent in state.sent.values())
    assert targets == sorted(f"c-{i}" for i in inactive)
    assert {sent["body"] for sent in state.sent.values()} == {TEXT}

    jobs = await db.fetch(
        "SELECT status, dedupe_key, lead_id FROM jobs WHERE type = 'reactivation_send'"
    )
    assert len(jobs) == 500 and {j["status"] for j in jobs} == {"succeeded"}
    assert sorted(j["lead_id"] for j in jobs) == inactive
    # The Idempotency-Key of each send is its job's dedupe key.
    assert {j["dedupe_key"] for j in jobs} == set(state.sent)
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0

    enrollments = await db.fetch(
        """
        SELECT e.lead_id, e.state, e.provider_message_id,
               array_agg(m.provider_message_id) FILTER (WHERE m.id IS NOT NULL) AS outbound
        FROM reactivation_enrollments AS e
        LEFT JOIN messages AS m
          ON m.lead_id = e.lead_id AND m.direction = 'outbound' AND m.sent_at > e.created_at
        WHERE e.reactivation_id = 'winback'
        GROUP BY e.lead_id, e.state, e.provider_message_id ORDER BY e.lead_id
        """
    )
    assert [e["lead_id"] for e in enrollments] == inactive
    sent_ids = {sent["target"]: sent["id"] for sent in state.sent.values()}
    for e in enrollments:
        assert e["state"] == "sent", e
        assert e["outbound"] == [e["provider_message_id"]], e
        assert e["provider_message_id"] == sent_ids[f"c-{e['lead_id']}"], e
    # Active leads got nothing: their only messages are the seeded ones.
    assert await db.fetchval("SELECT count(*) FROM messages WHERE lead_id = ANY($1)", active) == 500
    enrolled_lines = [r for r in logs.records() if r.get("msg") == "reactivation campaign enrolled"]
    assert [(r["enrolled"], r["skipped_no_identity"]) for r in enrolled_lines] == [(500, 0)]

    # The next slot's tick finds everyone already enrolled: nothing new is enqueued or sent.
    await fire_next_slot_tick(service, db)
    await drain(service)
    assert state.count("sms", "send") == 500 and len(state.sent) == 500
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'reactivation_send'") == 500
    ticks = await db.fetch("SELECT status FROM jobs WHERE type = 'reactivations_tick'")
    assert [t["status"] for t in ticks] == ["succeeded", "succeeded"]
    assert logs.errors() == []


async def test_leads_without_the_channel_identity_are_skipped_not_failed(
    service, db, sandbox, logs
):
    state, _ = sandbox
    reachable = [{"id": f"sms-{i}", "sms_contact_id": f"c-{i}"} for i in range(3)]
    # Inactive too, but with no SMS identity: an email one only, or none at all.
    unreachable = [{"id": f"mail-{i}", "email_lead_id": f"e-{i}"} for i in range(3)]
    unreachable.append({"id": "bare", "name": "No identity"})
    await add_leads(service, "acme", reachable + unreachable)
    await add_campaign(service)

    await fire_tick(service)
    await drain(service)

    assert sorted(sent["target"] for sent in state.sent.values()) == ["c-0", "c-1", "c-2"]
    assert state.count("sms", "send") == 3
    assert state.count("email", "send") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    sends = await db.fetch("SELECT lead_id FROM jobs WHERE type = 'reactivation_send'")
    assert sorted(s["lead_id"] for s in sends) == ["sms-0", "sms-1", "sms-2"]
    states = await db.fetch("SELECT lead_id, state FROM reactivation_enrollments ORDER BY lead_id")
    assert [(s["lead_id"], s["state"]) for s in states] == [
        ("sms-0", "sent"),
        ("sms-1", "sent"),
        ("sms-2", "sent"),
    ]
    enrolled_lines = [r for r in logs.records() if r.get("msg") == "reactivation campaign enrolled"]
    assert [(r["enrolled"], r["skipped_no_identity"]) for r in enrolled_lines] == [(3, 4)]


async def test_lead_that_replies_before_its_send_runs_is_not_sent_to(service, db, sandbox):
    state, _ = sandbox
    # An email address on the lead: the log guard checks it never reaches a log line.
    lead = {"id": "ada", "email": "ada@example.com", "email_lead_id": "e-ada"}
    await add_leads(service, "acme", [lead])
    await add_campaign(service, channel="email", subject="We miss you")
    # The first send attempt fails, so the send waits for its retry.
    state.add_fault("email", "error", times=1)

    await fire_tick(service)
    await service.run_jobs()
    job = await db.fetchrow("SELECT * FROM jobs WHERE type = 'reactivation_send'")
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert state.count("email", "send") == 1 and state.sent == {}

    # The lead writes back before the retry runs.
    await db.execute(
        """
        INSERT INTO messages
            (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)
        VALUES ('acme', 'ada', 'email', 'inbound', 'Actually, yes please', 'em-in-1', now())
        """
    )
    await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", job["id"])
    await drain(service)

    assert state.sent == {}
    assert state.count("email", "send") == 1
    enrollment = await db.fetchrow("SELECT * FROM reactivation_enrollments")
    assert (enrollment["state"], enrollment["provider_message_id"]) == ("stopped", None)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE direction = 'outbound'") == 0
    # The retry ran and ended quietly: a reply is not a failure of the send.
    retried = await db.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", job["id"])
    assert retried["attempts"] == 2 and retried["status"] != "failed"


async def test_send_accepted_but_timed_out_is_retried_with_the_same_key(start_service, db, sandbox):
    state, _ = sandbox
    service = start_service(provider_timeout_s=1)
    await add_leads(service, "acme", [{"id": "bo", "sms_contact_id": "c-bo"}])
    await add_campaign(service)
    # The provider records the send, then holds the answer past our timeout.
    state.add_fault("sms", "accept_then_hang", times=1, hang_s=5)

    await fire_tick(service)
    await service.run_jobs()
    job = await db.fetchrow("SELECT * FROM jobs WHERE type = 'reactivation_send'")
    assert (job["status"], job["attempts"]) == ("pending", 1)
    assert len(state.sent) == 1
    enrollment = await db.fetchrow("SELECT state FROM reactivation_enrollments")
    assert enrollment["state"] == "scheduled"

    await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", job["id"])
    await drain(service)

    # Two calls, one message: the retry carried the same Idempotency-Key.
    assert state.count("sms", "send") == 2
    assert list(state.sent) == [job["dedupe_key"]]
    [sent] = state.sent.values()
    assert sent["target"] == "c-bo" and sent["body"] == TEXT
    outbound = await db.fetch(
        "SELECT provider_message_id FROM messages WHERE lead_id = 'bo' AND direction = 'outbound'"
    )
    assert [m["provider_message_id"] for m in outbound] == [sent["id"]]
    enrollment = await db.fetchrow("SELECT * FROM reactivation_enrollments")
    assert (enrollment["state"], enrollment["provider_message_id"]) == ("sent", sent["id"])
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job["id"]) == "succeeded"
