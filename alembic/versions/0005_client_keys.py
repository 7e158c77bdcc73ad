"""Client keys: bearer keys that open the API to one client's data; jobs indexed by client.

A key is `hk_` and 43 characters of base64url (32 random bytes, 256 bits); it is shown once, when
it is made, and only its SHA-256 is kept. A fast unsalted hash is right for such a key, where it
would be wrong for a password: a password is guessable, so it needs salt and a slow hash to make
each guess expensive, but guessing one of 2^256 keys is hopeless at any speed. An unsalted hash
is also what lets the guard find a key by its hash with one indexed lookup per request, where a
salted slow hash would cost tens of milliseconds of CPU per request and need the key's id sent
beside it. A revoked key keeps its row (`revoked_at`), so the list shows when it stopped working.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE client_keys (
            id text PRIMARY KEY,
            client_id text NOT NULL REFERENCES clients (id),
            hash text NOT NULL UNIQUE,
            last4 text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX client_keys_client ON client_keys (client_id, created_at)")
    # A client key lists its client's newest jobs: without this, a scan of the whole table
    # (jobs of no client, the cron ticks, are never a key's).
    op.execute("CREATE INDEX jobs_client ON jobs (client_id, id) WHERE client_id IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX jobs_client")
    op.execute("DROP TABLE client_keys")
