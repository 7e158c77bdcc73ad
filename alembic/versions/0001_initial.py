"""Initial schema: clients, leads, messages, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMA = """
        CREATE TABLE clients (
            id text PRIMARY KEY,
            name text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE leads (
            id text PRIMARY KEY,
            client_id text NOT NULL REFERENCES clients (id),
            name text,
            email text,
            phone text,
            sms_contact_id text,
            email_lead_id text,
            score smallint CHECK (score BETWEEN 1 AND 4),
            score_reason text,
            scored_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        -- sync_all walks a client's leads by id, in pages.
        CREATE INDEX leads_client_id ON leads (client_id, id);
        -- Inbound email finds its lead by provider lead id or by address within the client.
        CREATE INDEX leads_client_email_lead ON leads (client_id, email_lead_id)
            WHERE email_lead_id IS NOT NULL;
        CREATE INDEX leads_client_email ON leads (client_id, lower(email))
            WHERE email IS NOT NULL;

        CREATE TABLE messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            lead_id text NOT NULL REFERENCES leads (id),
            channel text NOT NULL CHECK (channel IN ('sms', 'email')),
            direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
            text text NOT NULL,
            subject text,
            provider_message_id text NOT NULL,
            sent_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            -- Re-running a sync or a send never stores a provider message twice.
            CONSTRAINT messages_provider_id UNIQUE (channel, provider_message_id)
        );
        CREATE INDEX messages_lead_sent ON messages (lead_id, sent_at);

        CREATE TABLE jobs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            type text NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
            dedupe_key text NOT NULL,
            dedupe_scope text NOT NULL CHECK (dedupe_scope IN ('active', 'forever')),
            client_id text,
            lead_id text,
            payload jsonb NOT NULL DEFAULT '{}',
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
            run_at timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            last_error text,
            enqueue_count integer NOT NULL DEFAULT 1,
            lock_token uuid,
            locked_by text,
            locked_until timestamptz,
            CHECK ((status = 'running') = (lock_token IS NOT NULL))
        ) WITH (
            -- A hot queue table: rows churn through a few states in seconds, so vacuum
            -- and analyze early instead of at the default 20 % / 10 % of the table.
            autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_vacuum_threshold = 500,
            autovacuum_analyze_scale_factor = 0.02,
            autovacuum_vacuum_cost_delay = 0,
            fillfactor = 90
        );
        -- Dedupe is the database's job: "forever" keys are unique across all rows ...
        CREATE UNIQUE INDEX jobs_dedupe_forever ON jobs (dedupe_key)
            WHERE dedupe_scope = 'forever';
        -- ... "active" keys only among jobs still pending or running.
        CREATE UNIQUE INDEX jobs_dedupe_active ON jobs (dedupe_key)
            WHERE dedupe_scope = 'active' AND status IN ('pending', 'running');
        -- The claim reads due pending jobs in run_at order from this small index only.
        CREATE INDEX jobs_due ON jobs (run_at, id) WHERE status = 'pending';
        -- Expired leases are found without scanning finished jobs.
        CREATE INDEX jobs_lease ON jobs (locked_until) WHERE status = 'running';
        -- The jobs list filters by status, newest first.
        CREATE INDEX jobs_status_id ON jobs (status, id);
        """


def upgrade() -> None:
    # One statement per execute: asyncpg prepares each, and a prepared statement is single.
    for statement in SCHEMA.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for table in ("jobs", "messages", "leads", "clients"):
        op.execute(f"DROP TABLE {table}")
