"""/metrics after a scripted scenario: every series the operators rely on, with right counts."""

from __future__ import annotations

import json
import re

from tests.conftest import WEBHOOK_SECRET
from tests.support import seed, signed


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(service) -> str:
    response = await service.api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_follow_a_scripted_scenario(service, sandbox):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    before = await scrape(service)

    for _ in range(3):  # one job per channel, then two duplicate requests
        await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    body = json.dumps({"type": "email.received", "data": {}}).encode()
    bad = signed(WEBHOOK_SECRET, body, msg_id="wh-1") | {"webhook-signature": "v1,AAAA"}
    await service.anon.post("/webhooks/email", content=body, headers=bad)
    await service.anon.post(
        "/webhooks/email", content=body, headers=signed(WEBHOOK_SECRET, body, msg_id="wh-2")
    )
    state.add_fault("email", "error", times=1)
    summary = await service.run_jobs()
    assert (summary["succeeded"], summary["retried"]) == (1, 1)
    after = await scrape(service)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("handoff_jobs_enqueued_total", type="conversation_sync", deduplicated="false") == 2
    assert delta("handoff_jobs_enqueued_total", type="conversation_sync", deduplicated="true") == 4
    assert delta("handoff_webhook_rejections_total", reason="invalid_signature") == 1
    assert delta("handoff_webhook_rejections_total", reason="validation_error") == 1
    assert (
        delta(
            "handoff_job_attempt_duration_seconds_count",
            type="conversation_sync",
            outcome="succeeded",
        )
        == 1
    )
    assert (
        delta(
            "handoff_job_attempt_duration_seconds_count",
            type="conversation_sync",
            outcome="retried",
        )
        == 1
    )
    assert delta("handoff_runner_invocations_total", stop_reason="drained") == 1
    assert delta("handoff_provider_calls_total", provider="email", status_class="5xx") == 1
    assert delta("handoff_provider_calls_total", provider="sms", status_class="2xx") >= 1
    # Read from the table at scrape time: one succeeded, one waiting to be retried.
    assert sample(after, "handoff_queue_depth", status="succeeded", type="conversation_sync") == 1
    assert sample(after, "handoff_queue_depth", status="pending", type="conversation_sync") == 1
    assert sample(after, "handoff_oldest_due_job_age_seconds") == 0  # the retry is not due yet
    assert lead not in after, "metrics carry types and outcomes, never a lead"


async def test_metrics_need_the_api_token(service):
    assert (await service.anon.get("/metrics")).status_code == 401
