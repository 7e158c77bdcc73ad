"""Runner kicks: the slots that bound how many kicked runners run at once, and when each
runner invocation started.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per kicked runner on its way or running: `slot` is 0 .. RUNNER_KICK_MAX - 1, so
    # the primary key itself refuses a second holder; a holder that died leaves a row whose
    # `expires_at` has passed, which the next kick takes over.
    op.execute(
        """
        CREATE TABLE runner_kicks (
            slot integer PRIMARY KEY,
            token uuid NOT NULL,
            kicked_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            expires_at timestamptz NOT NULL,
            CONSTRAINT runner_kicks_slot_check CHECK (slot >= 0)
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX runner_kicks_token ON runner_kicks (token)")
    # With finished_at, each invocation's interval: how many ran at once can be counted.
    op.execute("ALTER TABLE runner_invocations ADD COLUMN started_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE runner_invocations DROP COLUMN started_at")
    op.execute("DROP TABLE runner_kicks")
