"""Provider accounts per client: each client's own SMS, email and AI provider settings, its
secrets encrypted (one Fernet token under ENCRYPTION_KEYS).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE provider_accounts (
            client_id text NOT NULL REFERENCES clients (id),
            channel text NOT NULL CHECK (channel IN ('sms', 'email', 'ai')),
            kind text NOT NULL,
            -- The kind's non-secret fields, as given (url, model, ...).
            settings jsonb NOT NULL,
            -- One Fernet token of the JSON of the kind's secret fields: readable only with
            -- one of ENCRYPTION_KEYS, never stored or logged in the clear.
            secrets text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (client_id, channel)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE provider_accounts")
