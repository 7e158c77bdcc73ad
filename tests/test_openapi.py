"""/openapi.json: a valid document that says what the service really does — who may call
what (the Authorize button), the real error shape for every error, the webhook's headers and
body, examples, and /metrics as text."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from app.main import create_app
from app.settings import Settings

PUBLIC = {
    "/healthz",
    "/readyz",
    "/webhooks/email",
    "/webhooks/email/{client_id}",
    "/webhooks/sms",
    "/webhooks/sms/{client_id}",
}
ERROR_REF = "#/components/schemas/ErrorOut"


@pytest.fixture(scope="module")
def spec() -> dict:
    settings = Settings(_env_file=None, database_url="postgresql://handoff@127.0.0.1/handoff")
    return create_app(settings).openapi()


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_document_is_valid_openapi(spec):
    validate(spec)


def test_bearer_schemes_are_declared_and_every_guarded_operation_names_one(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiToken"] == {**schemes["ApiToken"], "type": "http", "scheme": "bearer"}
    assert schemes["ClientKey"]["scheme"] == schemes["CronSecret"]["scheme"] == "bearer"
    for path, method, operation in operations(spec):
        names = {name for entry in operation.get("security", []) for name in entry}
        if path in PUBLIC:
            assert not names, (method, path)
        elif path.startswith("/api/cron/"):
            assert names == {"CronSecret"}, (method, path)
        elif "403" in operation["responses"]:  # API token only: a client key is forbidden
            assert names == {"ApiToken"}, (method, path)
        else:
            assert names == {"ApiToken", "ClientKey"}, (method, path)


def test_every_error_answer_is_documented_in_the_real_shape(spec):
    error = spec["components"]["schemas"]["ErrorOut"]
    assert set(error["required"]) == {"error", "detail"}
    assert error["examples"]
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        if path not in {"/healthz", "/readyz"}:
            assert any(code.startswith(("4", "5")) for code in responses), (method, path)
        for code, response in responses.items():
            if code.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (method, path, code, schema)
    # FastAPI's own validation shape is never what a client gets.
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_body_routes_document_their_limits_and_have_examples(spec):
    for path, method, operation in operations(spec):
        if "requestBody" not in operation:
            continue
        assert {"413", "422"} <= set(operation["responses"]), (method, path)
        # JSON, or a form for Twilio's webhook.
        [content] = operation["requestBody"]["content"].values()
        schema = content["schema"]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert content.get("example") or schema.get("examples"), (method, path)


def test_the_webhook_documents_its_headers_and_body(spec):
    operation = spec["paths"]["/webhooks/email"]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    body = operation["requestBody"]["content"]["application/json"]
    data = body["schema"]["properties"]["data"]
    assert {"client_id", "message_id", "from", "subject", "text", "received_at"} <= set(
        data["required"]
    )
    assert body["example"]["type"] == "email.received"
    assert {"401", "413", "422"} <= set(operation["responses"])


def test_metrics_are_documented_as_text(spec):
    content = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
