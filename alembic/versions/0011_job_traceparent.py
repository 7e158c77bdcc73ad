"""A job's traceparent: the W3C trace context of the request (or attempt) that created it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
# 0011 follows whichever migration is the head when it lands (0009 here).
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Set when a job is created and never changed: a deduplicated enqueue keeps the first.
    # NULL when tracing is off. A nullable column with no default is added without a rewrite.
    op.execute("ALTER TABLE jobs ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN traceparent")
