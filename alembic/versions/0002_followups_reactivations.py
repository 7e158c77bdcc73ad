"""Follow-up sequences and reactivation campaigns.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = """
        CREATE TABLE followups (
            id text PRIMARY KEY,
            lead_id text NOT NULL REFERENCES leads (id),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX followups_lead ON followups (lead_id);

        CREATE TABLE followup_steps (
            followup_id text NOT NULL REFERENCES followups (id),
            index integer NOT NULL,
            after_s integer NOT NULL CHECK (after_s >= 0),
            channel text NOT NULL CHECK (channel IN ('sms', 'email')),
            text text NOT NULL,
            subject text,
            due_at timestamptz NOT NULL,
            state text NOT NULL DEFAULT 'scheduled'
                CHECK (state IN ('scheduled', 'sent', 'stopped', 'failed')),
            -- Set when a tick has enqueued this step's send, so later ticks skip it.
            enqueued_at timestamptz,
            provider_message_id text,
            sent_at timestamptz,
            PRIMARY KEY (followup_id, index)
        );
        -- A tick reads only steps still waiting for a send job, in due order.
        CREATE INDEX followup_steps_due ON followup_steps (due_at)
            WHERE state = 'scheduled' AND enqueued_at IS NULL;

        CREATE TABLE reactivations (
            id text PRIMARY KEY,
            client_id text NOT NULL REFERENCES clients (id),
            inactive_days integer NOT NULL CHECK (inactive_days >= 1),
            channel text NOT NULL CHECK (channel IN ('sms', 'email')),
            text text NOT NULL,
            subject text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        -- One row per (campaign, lead) ever enrolled: "once per campaign" outlives job retention.
        -- The message is copied at enrollment, so every attempt of a send carries the same body
        -- under the same Idempotency-Key even if the campaign is edited meanwhile.
        CREATE TABLE reactivation_enrollments (
            reactivation_id text NOT NULL REFERENCES reactivations (id),
            lead_id text NOT NULL REFERENCES leads (id),
            channel text NOT NULL CHECK (channel IN ('sms', 'email')),
            text text NOT NULL,
            subject text,
            state text NOT NULL DEFAULT 'scheduled'
                CHECK (state IN ('scheduled', 'sent', 'stopped', 'failed')),
            provider_message_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            sent_at timestamptz,
            PRIMARY KEY (reactivation_id, lead_id)
        );
        """


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each, and a prepared statement is single.
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in ("reactivation_enrollments", "reactivations", "followup_steps", "followups"):
        op.execute(f"DROP TABLE {table}")
