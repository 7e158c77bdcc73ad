async def test_sync_then_run(service, sandbox, db):
    from tests.support import seed

    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    r = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    assert r.status_code == 202, r.text
    print(r.json())
    summary = await service.run_jobs()
    print(summary)
    r = await service.api.get(f"/api/leads/{lead}/messages")
    print(len(r.json()["messages"]))
    assert summary["succeeded"] == 2
