"""The API's request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.settings import E164
from app.storable import StorableStr, UtcDatetime

# Ids from callers: 1-64 chars of A-Za-z0-9_.:-
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Channel = Literal["sms", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "email")
JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def request_schema(*examples: dict[str, Any]) -> ConfigDict:
    """A request body's config: unknown fields refused, these examples in the OpenAPI doc."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class SyncRequest(Strict):
    model_config = request_schema(
        {"client_id": "acme", "lead_id": "lead-42", "channels": ["sms", "email"]},
        {"client_id": "acme"},
    )

    client_id: Id
    lead_id: Id | None = None
    channels: list[Channel] | None = None

    @field_validator("channels")
    @classmethod
    def _non_empty(cls, value: list[Channel] | None) -> list[Channel] | None:
        if value is not None and not value:
            raise ValueError("channels must name at least one channel")
        return value


class JobRef(BaseModel):
    id: str
    type: str
    status: JobStatus
    deduplicated: bool


class SyncResponse(BaseModel):
    jobs: list[JobRef]


class EnqueuedResponse(BaseModel):
    job_id: str
    deduplicated: bool


class JobOut(BaseModel):
    id: str
    type: str
    status: JobStatus
    dedupe_key: str
    client_id: str | None
    lead_id: str | None
    # Lower runs first, within its client's turn: 0 for work a person or a provider event
    # started, 5 for bulk work (sync_all's fan-out).
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    enqueue_count: int


class JobList(BaseModel):
    jobs: list[JobOut]


class ClientIn(Strict):
    model_config = request_schema({"id": "acme", "name": "Acme Realty"})

    id: Id
    name: Annotated[StorableStr, StringConstraints(min_length=1, max_length=200)]


class ClientOut(BaseModel):
    id: str
    name: str


# What a phone number may be written with, besides its digits and leading "+".
PHONE_PUNCTUATION = str.maketrans("", "", " -.()")


def e164(value: str) -> str:
    """A phone number as stored: E.164 (`+` and up to 15 digits), from a number written with
    spaces, dashes, dots or parentheses; ValueError (never quoting it) for anything else."""
    normalized = value.translate(PHONE_PUNCTUATION)
    if not E164.fullmatch(normalized):
        raise ValueError(
            "must be an international number in E.164 form: + and the country code, then the "
            "number (spaces, dashes, dots and parentheses are allowed)"
        )
    return normalized


Phone = Annotated[str, StringConstraints(max_length=40), AfterValidator(e164)]


class LeadIn(Strict):
    id: Id
    name: Annotated[StorableStr, StringConstraints(max_length=200)] | None = None
    email: Annotated[StorableStr, StringConstraints(max_length=320)] | None = None
    # Stored normalized: "+1 (555) 555-0142" is kept as "+15555550142".
    phone: Phone | None = None
    sms_contact_id: Id | None = None
    email_lead_id: Id | None = None


class LeadsIn(Strict):
    model_config = request_schema(
        {
            "client_id": "acme",
            "leads": [
                {
                    "id": "lead-42",
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "phone": "+15555550142",
                    "sms_contact_id": "c-42",
                    "email_lead_id": "e-42",
                }
            ],
        }
    )

    client_id: Id
    leads: Annotated[list[LeadIn], Field(min_length=1, max_length=1000)]


class UpsertedResponse(BaseModel):
    upserted: int


class LeadOut(BaseModel):
    id: str
    client_id: str
    name: str | None
    email: str | None
    phone: str | None
    sms_contact_id: str | None
    email_lead_id: str | None
    score: int | None
    score_reason: str | None
    scored_at: datetime | None


class MessageOut(BaseModel):
    id: str
    channel: Channel
    direction: Literal["inbound", "outbound"]
    text: str
    provider_message_id: str
    sent_at: datetime


class MessageList(BaseModel):
    messages: list[MessageOut]


class RunnerSummary(BaseModel):
    invocation_id: str
    processed: int
    succeeded: int
    retried: int
    failed: int
    released: int
    released_stale: int
    remaining_due: int
    oldest_due_age_s: float
    duration_ms: int
    stop_reason: Literal["drained", "budget"]


class KickTakenUp(BaseModel):
    """A runner kick, taken up: this runner holds the kick's slot and drains after answering."""

    invocation_id: str


class QueueCount(BaseModel):
    status: JobStatus
    type: str
    count: int


class RunOut(RunnerSummary):
    finished_at: datetime


class QueueMinute(BaseModel):
    """One UTC minute of the queue's last hour."""

    minute: datetime = Field(description="The start of the minute (UTC).")
    succeeded: int = Field(description="Jobs that finished as succeeded in this minute.")
    failed: int = Field(description="Jobs that finished as failed in this minute.")
    cancelled: int = Field(description="Jobs cancelled in this minute.")
    backlog: int = Field(
        description="Jobs due and waiting to start at the end of this minute (for the current "
        "minute: now). Derived from each job's run_at, created_at, started_at and finished_at, "
        "so only a job's latest wait counts: the waits before its retries are not kept."
    )


class QueueOverview(BaseModel):
    client_id: str | None = Field(
        description="The client these figures cover (a client key's); null: every client."
    )
    counts: list[QueueCount]
    due: int
    oldest_due_age_s: float
    last_hour: list[QueueMinute] = Field(
        description="The last 60 minutes, oldest first, the current (unfinished) minute last."
    )
    runs: list[RunOut] = Field(
        description="The latest runner invocations, newest first; empty for a client key, as "
        "a runner drains every client's jobs."
    )


class ClientProvider(BaseModel):
    """Which API a client's channel goes through: its own account's kind, else the global
    account's (`account` says which); kind None: the channel has no provider configured."""

    kind: str | None
    account: Literal["own", "global"] | None


class ClientListed(ClientOut):
    # By channel: sms, email, ai.
    providers: dict[str, ClientProvider] = {}


class ClientList(BaseModel):
    clients: list[ClientListed]


class LeadList(BaseModel):
    leads: list[LeadOut]


class InboundEmail(Strict):
    model_config = ConfigDict(extra="ignore")
    client_id: Id
    message_id: Annotated[StorableStr, StringConstraints(min_length=1, max_length=255)]
    email_lead_id: Id | None = None
    from_: Annotated[StorableStr, StringConstraints(min_length=3, max_length=320)] = Field(
        alias="from"
    )
    subject: Annotated[StorableStr, StringConstraints(max_length=2000)]
    # No cap of its own: the whole delivery is already capped at 1 MiB.
    text: StorableStr
    # In UTC; refused at intake when out of range rather than failing the job forever.
    received_at: UtcDatetime


class ErrorOut(BaseModel):
    """Every error: a stable code and a sentence for people; some add fields (`job_id`)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"error": "unknown_lead", "detail": "No lead with this id."}]
        },
    )
    error: str
    detail: str


# --- follow-ups and reactivations ---------------------------------------------------------

Text = Annotated[StorableStr, StringConstraints(min_length=1, max_length=5000)]
Subject = Annotated[StorableStr, StringConstraints(max_length=200)]
StepState = Literal["scheduled", "sent", "stopped", "failed"]


class FollowupStepIn(Strict):
    after_s: Annotated[int, Field(ge=0, le=366 * 24 * 3600)]
    channel: Channel
    text: Text
    subject: Subject | None = None


class FollowupIn(Strict):
    model_config = request_schema(
        {
            "lead_id": "lead-42",
            "steps": [
                {"after_s": 86400, "channel": "sms", "text": "Still looking?"},
                {
                    "after_s": 259200,
                    "channel": "email",
                    "subject": "New listings",
                    "text": "Three new homes match your search.",
                },
            ],
        }
    )

    lead_id: Id
    steps: Annotated[list[FollowupStepIn], Field(min_length=1, max_length=50)]


class CreatedResponse(BaseModel):
    id: str


class FollowupStepOut(BaseModel):
    index: int
    after_s: int
    channel: Channel
    due_at: datetime
    state: StepState
    provider_message_id: str | None = None


class FollowupOut(BaseModel):
    id: str
    lead_id: str
    created_at: datetime
    steps: list[FollowupStepOut]


class ReactivationIn(Strict):
    model_config = request_schema(
        {
            "id": "spring",
            "client_id": "acme",
            "inactive_days": 90,
            "channel": "sms",
            "text": "Spring listings are out. Want a tour?",
        }
    )

    id: Id
    client_id: Id
    inactive_days: Annotated[int, Field(ge=1, le=3650)]
    channel: Channel
    text: Text
    subject: Subject | None = None


class ReactivationOut(BaseModel):
    id: str
    client_id: str
    inactive_days: int
    channel: Channel
    text: str
    subject: str | None
    created_at: datetime
    updated_at: datetime


# --- client keys --------------------------------------------------------------------------


class ClientKeyCreated(BaseModel):
    """A new key: `key` is in this answer only (only its hash is stored)."""

    id: str
    key: str
    client_id: str
    created_at: datetime


class ClientKeyOut(BaseModel):
    """A key as listed: never the key itself, nor its hash; `last4` tells keys apart."""

    id: str
    client_id: str
    last4: str
    created_at: datetime
    revoked_at: datetime | None


class ClientKeyList(BaseModel):
    keys: list[ClientKeyOut]


# --- provider accounts --------------------------------------------------------------------


class ProviderAccountIn(Strict):
    model_config = request_schema(
        {"kind": "generic", "settings": {"url": "https://sms.example.com", "key": "sk_live_…"}},
        {
            "kind": "generic",
            "settings": {
                "url": "https://mail.example.com",
                "key": "em_live_…",
                "webhook_secret": "whsec_…",
            },
        },
        {
            "kind": "generic",
            "settings": {"url": "https://api.openai.com/v1", "key": "sk-…", "model": "gpt-4o-mini"},
        },
    )

    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The account's kind; each channel has `generic` (the contract's API)."
    )
    settings: dict[str, Any] = Field(
        description="The kind's fields. generic sms: `url`, `key`*; generic email: `url`, "
        "`key`*, `webhook_secret`* (optional, `whsec_…`); generic ai: `url`, `key`*, `model`. "
        "Fields marked * are secret: stored encrypted, answered only as their last 4 characters."
    )


class ProviderAccountOut(BaseModel):
    client_id: str
    channel: Literal["sms", "email", "ai"]
    kind: str
    settings: dict[str, Any] = Field(description="The non-secret fields, as stored.")
    secrets: dict[str, str] = Field(
        description="Each secret field that is set, as `…` and its last 4 characters "
        "(`…` alone when it is shorter than 16)."
    )
    updated_at: datetime
