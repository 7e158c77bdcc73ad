"""Lead phones at intake: common formatting accepted and stored in E.164, the rest 422."""

from __future__ import annotations

import pytest

from tests.support import assert_error


async def add_client(service) -> None:
    response = await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    assert response.status_code == 200, response.text


async def test_formatted_numbers_are_stored_in_e164(service, db):
    await add_client(service)
    written = ["+1 (555) 010-4242", "+44 20 7946 0958", "+33.1.23.45.67.89", "+15550104243"]
    leads = [{"id": f"l{i}", "phone": phone} for i, phone in enumerate(written)]
    response = await service.api.post("/api/leads", json={"client_id": "acme", "leads": leads})
    assert response.status_code == 200, response.text
    rows = await db.fetch("SELECT phone FROM leads ORDER BY id")
    assert [r["phone"] for r in rows] == [
        "+15550104242",
        "+442079460958",
        "+33123456789",
        "+15550104243",
    ]
    lead = (await service.api.get("/api/leads/l0")).json()
    assert lead["phone"] == "+15550104242"


@pytest.mark.parametrize(
    "phone",
    [
        "555 010 4242",
        "+0 555 0104242",
        "+1 555 CALL NOW",
        "+1234",
        "+1" + "2" * 15,
        "tel:+15550104242",
    ],
)
async def test_anything_else_is_422_naming_the_field_not_the_value(service, db, phone):
    await add_client(service)
    body = {"client_id": "acme", "leads": [{"id": "l1", "phone": phone}]}
    error = assert_error(await service.api.post("/api/leads", json=body), 422, "validation_error")
    assert "leads.0.phone" in error["detail"] and "E.164" in error["detail"]
    assert phone not in error["detail"]
    assert await db.fetchval("SELECT count(*) FROM leads") == 0
