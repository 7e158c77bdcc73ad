"""Runner invocations: each drain's summary, for operators and the dashboard.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE runner_invocations (
            invocation_id text PRIMARY KEY,
            finished_at timestamptz NOT NULL DEFAULT now(),
            summary jsonb NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX runner_invocations_finished ON runner_invocations (finished_at)")


def downgrade() -> None:
    op.execute("DROP TABLE runner_invocations")
