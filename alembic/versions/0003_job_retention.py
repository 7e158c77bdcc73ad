"""Index finished jobs by when they finished, for pruning.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pruning deletes the oldest finished jobs in batches; this keeps each batch an index read.
    op.execute(
        "CREATE INDEX jobs_finished ON jobs (finished_at)"
        " WHERE status IN ('succeeded', 'failed', 'cancelled')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX jobs_finished")
