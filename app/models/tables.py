"""The tables as SQLAlchemy sees them, for queries; Alembic (`alembic/versions`) creates them.

Each table mirrors its migration's SQL exactly: `text` columns, names of indexes and
constraints, partial index predicates, defaults, storage parameters. tests/test_schema.py runs
`alembic check` against a freshly migrated database, so any difference Alembic can see fails
the suite. Alembic cannot see everything:

- CHECK constraints: never compared.
- Partial index predicates (`postgresql_where`): an index's columns, expressions (so
  `lower(email)` is compared) and uniqueness are, its WHERE clause is not.
- Table storage parameters (`postgresql_with` on `jobs`): not compared.
- Server defaults: compared only with `compare_server_default`, which alembic/env.py leaves off.

tests/test_schema.py covers those too: it compares server defaults itself, and builds a database
from this metadata alone to compare PostgreSQL's catalog of it with the migrated one.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import SQLModel

metadata = SQLModel.metadata

NOW = text("now()")
CHANNEL_CHECK = "channel IN ('sms', 'email')"
STATE_CHECK = "state IN ('scheduled', 'sent', 'stopped', 'failed')"


def _timestamp(name: str, *, nullable: bool = True, now: bool = False) -> Column:
    return Column(
        name, DateTime(timezone=True), nullable=nullable, server_default=NOW if now else None
    )


# 0001_initial

clients = Table(
    "clients",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    _timestamp("created_at", nullable=False, now=True),
)

leads = Table(
    "leads",
    metadata,
    Column("id", Text, primary_key=True),
    Column("client_id", Text, ForeignKey("clients.id"), nullable=False),
    Column("name", Text),
    Column("email", Text),
    Column("phone", Text),
    Column("sms_contact_id", Text),
    Column("email_lead_id", Text),
    Column("score", SmallInteger),
    Column("score_reason", Text),
    _timestamp("scored_at"),
    _timestamp("created_at", nullable=False, now=True),
    _timestamp("updated_at", nullable=False, now=True),
    CheckConstraint("score BETWEEN 1 AND 4", name="leads_score_check"),
    Index("leads_client_id", "client_id", "id"),
    Index(
        "leads_client_email_lead",
        "client_id",
        "email_lead_id",
        postgresql_where=text("email_lead_id IS NOT NULL"),
    ),
    Index(
        "leads_client_email",
        "client_id",
        text("lower(email)"),
        postgresql_where=text("email IS NOT NULL"),
    ),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("lead_id", Text, ForeignKey("leads.id"), nullable=False),
    Column("channel", Text, nullable=False),
    Column("direction", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("subject", Text),
    Column("provider_message_id", Text, nullable=False),
    _timestamp("sent_at", nullable=False),
    _timestamp("created_at", nullable=False, now=True),
    CheckConstraint(CHANNEL_CHECK, name="messages_channel_check"),
    CheckConstraint("direction IN ('inbound', 'outbound')", name="messages_direction_check"),
    Index("messages_lead_sent", "lead_id", "sent_at"),
    # 0007_client_identity: a message belongs to its lead's client, unique within it.
    Column(
        "client_id", Text, ForeignKey("clients.id", name="messages_client_id_fkey"), nullable=False
    ),
    UniqueConstraint(
        "client_id", "channel", "provider_message_id", name="messages_client_provider_id"
    ),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("dedupe_key", Text, nullable=False),
    Column("dedupe_scope", Text, nullable=False),
    Column("client_id", Text),
    Column("lead_id", Text),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("5")),
    _timestamp("run_at", nullable=False, now=True),
    _timestamp("created_at", nullable=False, now=True),
    _timestamp("started_at"),
    _timestamp("finished_at"),
    Column("last_error", Text),
    Column("enqueue_count", Integer, nullable=False, server_default=text("1")),
    Column("lock_token", Uuid),
    Column("locked_by", Text),
    _timestamp("locked_until"),
    CheckConstraint(
        "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
        name="jobs_status_check",
    ),
    CheckConstraint("dedupe_scope IN ('active', 'forever')", name="jobs_dedupe_scope_check"),
    CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
    CheckConstraint("(status = 'running') = (lock_token IS NOT NULL)", name="jobs_check"),
    Index(
        "jobs_dedupe_forever",
        "dedupe_key",
        unique=True,
        postgresql_where=text("dedupe_scope = 'forever'"),
    ),
    Index(
        "jobs_dedupe_active",
        "dedupe_key",
        unique=True,
        postgresql_where=text("dedupe_scope = 'active' AND status IN ('pending', 'running')"),
    ),
    Index("jobs_due", "run_at", "id", postgresql_where=text("status = 'pending'")),
    Index("jobs_lease", "locked_until", postgresql_where=text("status = 'running'")),
    Index("jobs_status_id", "status", "id"),
    # 0003_job_retention
    Index(
        "jobs_finished",
        "finished_at",
        postgresql_where=text("status IN ('succeeded', 'failed', 'cancelled')"),
    ),
    # 0005_client_keys
    Index("jobs_client", "client_id", "id", postgresql_where=text("client_id IS NOT NULL")),
    # 0009_fair_claim
    Column("priority", SmallInteger, nullable=False, server_default=text("0")),
    CheckConstraint("priority BETWEEN 0 AND 9", name="jobs_priority_check"),
    Index(
        "jobs_due_group",
        text("(coalesce(client_id, ''))"),
        "priority",
        "run_at",
        "id",
        postgresql_where=text("status = 'pending'"),
    ),
    # 0011_job_traceparent
    Column("traceparent", Text),
    postgresql_with={
        "autovacuum_vacuum_scale_factor": 0.02,
        "autovacuum_vacuum_threshold": 500,
        "autovacuum_analyze_scale_factor": 0.02,
        "autovacuum_vacuum_cost_delay": 0,
        "fillfactor": 90,
    },
)

# 0002_followups_reactivations

followups = Table(
    "followups",
    metadata,
    Column("id", Text, primary_key=True),
    Column("lead_id", Text, ForeignKey("leads.id"), nullable=False),
    _timestamp("created_at", nullable=False, now=True),
    Index("followups_lead", "lead_id"),
)

followup_steps = Table(
    "followup_steps",
    metadata,
    Column("followup_id", Text, ForeignKey("followups.id"), primary_key=True),
    Column("index", Integer, primary_key=True),
    Column("after_s", Integer, nullable=False),
    Column("channel", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("subject", Text),
    _timestamp("due_at", nullable=False),
    Column("state", Text, nullable=False, server_default="scheduled"),
    _timestamp("enqueued_at"),
    Column("provider_message_id", Text),
    _timestamp("sent_at"),
    CheckConstraint("after_s >= 0", name="followup_steps_after_s_check"),
    CheckConstraint(CHANNEL_CHECK, name="followup_steps_channel_check"),
    CheckConstraint(STATE_CHECK, name="followup_steps_state_check"),
    Index(
        "followup_steps_due",
        "due_at",
        postgresql_where=text("state = 'scheduled' AND enqueued_at IS NULL"),
    ),
)

reactivations = Table(
    "reactivations",
    metadata,
    Column("id", Text, nullable=False),
    Column("client_id", Text, ForeignKey("clients.id"), nullable=False),
    Column("inactive_days", Integer, nullable=False),
    Column("channel", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("subject", Text),
    _timestamp("created_at", nullable=False, now=True),
    _timestamp("updated_at", nullable=False, now=True),
    CheckConstraint("inactive_days >= 1", name="reactivations_inactive_days_check"),
    CheckConstraint(CHANNEL_CHECK, name="reactivations_channel_check"),
    # 0007_client_identity: a campaign id is unique within its client.
    PrimaryKeyConstraint("client_id", "id", name="reactivations_pkey"),
)

reactivation_enrollments = Table(
    "reactivation_enrollments",
    metadata,
    Column("reactivation_id", Text, nullable=False),
    Column("lead_id", Text, ForeignKey("leads.id"), nullable=False),
    Column("channel", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("subject", Text),
    Column("state", Text, nullable=False, server_default="scheduled"),
    Column("provider_message_id", Text),
    _timestamp("created_at", nullable=False, now=True),
    _timestamp("sent_at"),
    CheckConstraint(CHANNEL_CHECK, name="reactivation_enrollments_channel_check"),
    CheckConstraint(STATE_CHECK, name="reactivation_enrollments_state_check"),
    # 0007_client_identity: enrollments follow their campaign's key.
    Column("client_id", Text, nullable=False),
    PrimaryKeyConstraint(
        "client_id", "reactivation_id", "lead_id", name="reactivation_enrollments_pkey"
    ),
    ForeignKeyConstraint(
        ["client_id", "reactivation_id"],
        ["reactivations.client_id", "reactivations.id"],
        name="reactivation_enrollments_client_id_reactivation_id_fkey",
    ),
)

# 0004_runner_invocations

runner_invocations = Table(
    "runner_invocations",
    metadata,
    Column("invocation_id", Text, primary_key=True),
    _timestamp("finished_at", nullable=False, now=True),
    Column("summary", JSONB, nullable=False),
    Index("runner_invocations_finished", "finished_at"),
    # 0008_runner_kicks
    _timestamp("started_at"),
)

# 0008_runner_kicks

runner_kicks = Table(
    "runner_kicks",
    metadata,
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("token", Uuid, nullable=False),
    _timestamp("kicked_at", nullable=False, now=True),
    _timestamp("started_at"),
    _timestamp("expires_at", nullable=False),
    CheckConstraint("slot >= 0", name="runner_kicks_slot_check"),
    Index("runner_kicks_token", "token", unique=True),
)

# 0009_fair_claim

client_turns = Table(
    "client_turns",
    metadata,
    Column("client_group", Text, primary_key=True),
    _timestamp("served_at", nullable=False),
)

rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", Text, primary_key=True),
    _timestamp("tat", nullable=False),
    Column("granted", Boolean, nullable=False),
)

# 0005_client_keys

client_keys = Table(
    "client_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("client_id", Text, ForeignKey("clients.id"), nullable=False),
    # SHA-256 of the whole key, hex: the key itself is never stored.
    Column("hash", Text, nullable=False),
    Column("last4", Text, nullable=False),
    _timestamp("created_at", nullable=False, now=True),
    _timestamp("revoked_at"),
    UniqueConstraint("hash", name="client_keys_hash_key"),
    Index("client_keys_client", "client_id", "created_at"),
)


# 0006_provider_accounts

provider_accounts = Table(
    "provider_accounts",
    metadata,
    Column("client_id", Text, ForeignKey("clients.id"), primary_key=True),
    Column("channel", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("settings", JSONB, nullable=False),
    Column("secrets", Text, nullable=False),
    _timestamp("updated_at", nullable=False, now=True),
    CheckConstraint("channel IN ('sms', 'email', 'ai')", name="provider_accounts_channel_check"),
)


# The one name app/local.py still uses (`Client.__table__`); new code uses `clients`.


class Client:
    __table__ = clients
