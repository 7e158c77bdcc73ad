"""Fair claim: a job's priority, the index and the turns the fair claim reads, and the rate
buckets.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Lower runs first: 0 for work a person or a provider event started, more for bulk work.
    # A constant default adds the column without rewriting the table.
    op.execute(
        "ALTER TABLE jobs ADD COLUMN priority smallint NOT NULL DEFAULT 0,"
        " ADD CONSTRAINT jobs_priority_check CHECK (priority BETWEEN 0 AND 9)"
    )
    # The fair claim walks the due jobs group by group (a client, or '' for jobs of no client),
    # each group's in the order it runs them: one index probe per group with due jobs.
    op.execute(
        "CREATE INDEX jobs_due_group ON jobs ((coalesce(client_id, '')), priority, run_at, id)"
        " WHERE status = 'pending'"
    )
    # When each group (a client, or '' for jobs of no client) last had a job claimed: among
    # groups with as many jobs running, the one served longest ago goes first.
    op.execute(
        """
        CREATE TABLE client_turns (
            client_group text PRIMARY KEY,
            served_at timestamptz NOT NULL
        )
        """
    )
    # One token bucket per rate-limited key, as the time its next token is due (GCRA's
    # theoretical arrival time); `granted` says whether the last take got one.
    op.execute(
        """
        CREATE TABLE rate_buckets (
            key text PRIMARY KEY,
            tat timestamptz NOT NULL,
            granted boolean NOT NULL
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE rate_buckets")
    op.execute("DROP TABLE client_turns")
    op.execute("DROP INDEX jobs_due_group")
    op.execute("ALTER TABLE jobs DROP CONSTRAINT jobs_priority_check, DROP COLUMN priority")
