"""Tables (SQLModel) and the API's request and response schemas.

The schema itself is created by Alembic (`alembic/versions`); these classes mirror it for
queries and give the API its shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, field_validator
from sqlalchemy import BigInteger, Column, DateTime, Identity, SmallInteger, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# Ids from callers: 1-64 chars of A-Za-z0-9_.:-
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Channel = Literal["sms", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "email")
JobStatus = Literal["pending", "running", "succeeded", "failed", "cancelled"]


def _ts(**kw: Any) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), **kw))


class Client(SQLModel, table=True):
    __tablename__ = "clients"
    id: str = Field(primary_key=True)
    name: str
    created_at: datetime | None = _ts(nullable=False, server_default="now()")


class Lead(SQLModel, table=True):
    __tablename__ = "leads"
    id: str = Field(primary_key=True)
    client_id: str = Field(foreign_key="clients.id", index=True)
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    sms_contact_id: str | None = None
    email_lead_id: str | None = None
    score: int | None = Field(default=None, sa_column=Column(SmallInteger))
    score_reason: str | None = None
    scored_at: datetime | None = _ts()
    created_at: datetime | None = _ts(nullable=False, server_default="now()")
    updated_at: datetime | None = _ts(nullable=False, server_default="now()")


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    lead_id: str = Field(foreign_key="leads.id")
    channel: str
    direction: str
    text: str = Field(sa_column=Column(Text, nullable=False))
    subject: str | None = None
    provider_message_id: str
    sent_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime | None = _ts(nullable=False, server_default="now()")


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    id: int | None = Field(default=None, sa_column=Column(BigInteger, Identity(), primary_key=True))
    type: str
    status: str = "pending"
    dedupe_key: str
    dedupe_scope: str
    client_id: str | None = None
    lead_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    attempts: int = 0
    max_attempts: int = 5
    run_at: datetime | None = _ts(nullable=False, server_default="now()")
    created_at: datetime | None = _ts(nullable=False, server_default="now()")
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    last_error: str | None = None
    enqueue_count: int = 1
    lock_token: str | None = None
    locked_by: str | None = None
    locked_until: datetime | None = _ts()


# --- API schemas -------------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class SyncRequest(Strict):
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
    id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class ClientOut(BaseModel):
    id: str
    name: str


class LeadIn(Strict):
    id: Id
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(max_length=40)] | None = None
    sms_contact_id: Id | None = None
    email_lead_id: Id | None = None


class LeadsIn(Strict):
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


class QueueCount(BaseModel):
    status: JobStatus
    type: str
    count: int


class RunOut(RunnerSummary):
    finished_at: datetime


class QueueOverview(BaseModel):
    counts: list[QueueCount]
    due: int
    oldest_due_age_s: float
    runs: list[RunOut]


class ClientList(BaseModel):
    clients: list[ClientOut]


class LeadList(BaseModel):
    leads: list[LeadOut]


class InboundEmail(Strict):
    model_config = ConfigDict(extra="ignore")
    client_id: Id
    message_id: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    email_lead_id: Id | None = None
    from_: Annotated[str, StringConstraints(min_length=3, max_length=320)] = Field(alias="from")
    subject: Annotated[str, StringConstraints(max_length=2000)]
    # No cap of its own: the whole delivery is already capped at 1 MiB.
    text: str
    received_at: datetime


class ErrorOut(BaseModel):
    error: str
    detail: str


# --- follow-ups and reactivations ---------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=5000)]
Subject = Annotated[str, StringConstraints(max_length=200)]
StepState = Literal["scheduled", "sent", "stopped", "failed"]


class FollowupStepIn(Strict):
    after_s: Annotated[int, Field(ge=0, le=366 * 24 * 3600)]
    channel: Channel
    text: Text
    subject: Subject | None = None


class FollowupIn(Strict):
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
