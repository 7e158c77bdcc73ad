"""Identity per client: messages, campaign ids and dedupe keys that never cross clients.

- messages gain `client_id` (their lead's client) and are unique per (client, channel, provider
  message id): two clients may hold the same provider message id, and each keeps its message.
- reactivations are keyed by (client_id, id), and their enrollments by (client_id,
  reactivation_id, lead_id): two clients may each have a campaign of the same id.
- jobs of a lead carry its client, and every dedupe key is rewritten into the encoding
  app/queue/enqueue.py builds (`type:part1:part2…`, `%` and `:` escaped in each part), from each
  job's columns and payload, so a redelivery or cron call after the upgrade deduplicates against
  a job created before it. A send that already tried its old key keeps that key as its
  Idempotency-Key (`payload.idempotency_key`), so a retry after the upgrade cannot send twice.
  An enrollment whose send the old keys swallowed (campaign `a` + lead `b:c` shared the key of
  campaign `a:b` + lead `c`) gets its send job now.

Downgrade fails, and changes nothing, when the data already uses what the old schema could not
hold (a provider message id or campaign id in two clients, dedupe keys that collide unescaped).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


MESSAGES_UP = """
        ALTER TABLE messages ADD COLUMN client_id text;
        UPDATE messages AS m SET client_id = l.client_id FROM leads AS l WHERE l.id = m.lead_id;
        ALTER TABLE messages ALTER COLUMN client_id SET NOT NULL;
        ALTER TABLE messages ADD CONSTRAINT messages_client_id_fkey
            FOREIGN KEY (client_id) REFERENCES clients (id);
        ALTER TABLE messages DROP CONSTRAINT messages_provider_id;
        -- Re-running a sync or a send never stores a provider message twice for a client.
        ALTER TABLE messages ADD CONSTRAINT messages_client_provider_id
            UNIQUE (client_id, channel, provider_message_id)
        """

MESSAGES_DOWN = """
        ALTER TABLE messages DROP CONSTRAINT messages_client_provider_id;
        ALTER TABLE messages ADD CONSTRAINT messages_provider_id
            UNIQUE (channel, provider_message_id);
        ALTER TABLE messages DROP COLUMN client_id
        """

CAMPAIGNS_UP = """
        ALTER TABLE reactivation_enrollments ADD COLUMN client_id text;
        UPDATE reactivation_enrollments AS e SET client_id = r.client_id
            FROM reactivations AS r WHERE r.id = e.reactivation_id;
        ALTER TABLE reactivation_enrollments ALTER COLUMN client_id SET NOT NULL;
        ALTER TABLE reactivation_enrollments
            DROP CONSTRAINT reactivation_enrollments_reactivation_id_fkey;
        ALTER TABLE reactivation_enrollments DROP CONSTRAINT reactivation_enrollments_pkey;
        ALTER TABLE reactivations DROP CONSTRAINT reactivations_pkey;
        ALTER TABLE reactivations ADD CONSTRAINT reactivations_pkey PRIMARY KEY (client_id, id);
        ALTER TABLE reactivation_enrollments ADD CONSTRAINT reactivation_enrollments_pkey
            PRIMARY KEY (client_id, reactivation_id, lead_id);
        ALTER TABLE reactivation_enrollments
            ADD CONSTRAINT reactivation_enrollments_client_id_reactivation_id_fkey
            FOREIGN KEY (client_id, reactivation_id) REFERENCES reactivations (client_id, id)
        """

CAMPAIGNS_DOWN = """
        ALTER TABLE reactivation_enrollments
            DROP CONSTRAINT reactivation_enrollments_client_id_reactivation_id_fkey;
        ALTER TABLE reactivation_enrollments DROP CONSTRAINT reactivation_enrollments_pkey;
        ALTER TABLE reactivations DROP CONSTRAINT reactivations_pkey;
        ALTER TABLE reactivations ADD CONSTRAINT reactivations_pkey PRIMARY KEY (id);
        ALTER TABLE reactivation_enrollments ADD CONSTRAINT reactivation_enrollments_pkey
            PRIMARY KEY (reactivation_id, lead_id);
        ALTER TABLE reactivation_enrollments
            ADD CONSTRAINT reactivation_enrollments_reactivation_id_fkey
            FOREIGN KEY (reactivation_id) REFERENCES reactivations (id);
        ALTER TABLE reactivation_enrollments DROP COLUMN client_id
        """

# The dedupe indexes, dropped while keys are rewritten (one UPDATE may pass through a key
# another row is about to leave) and built again over the rewritten keys.
DEDUPE_INDEXES = """
        CREATE UNIQUE INDEX jobs_dedupe_forever ON jobs (dedupe_key)
            WHERE dedupe_scope = 'forever';
        CREATE UNIQUE INDEX jobs_dedupe_active ON jobs (dedupe_key)
            WHERE dedupe_scope = 'active' AND status IN ('pending', 'running')
        """
DROP_DEDUPE_INDEXES = "DROP INDEX jobs_dedupe_forever; DROP INDEX jobs_dedupe_active"


def escaped(sql: str) -> str:
    """SQL escaping one key part as app.queue.enqueue.escape_part does."""
    return f"replace(replace({sql}, '%', '%25'), ':', '%3A')"


def unescaped(sql: str) -> str:
    """SQL undoing `escaped` (a `%3A` in escaped text is always an escaped colon)."""
    return f"replace(replace({sql}, '%3A', ':'), '%25', '%')"


def key(*parts: str) -> str:
    """SQL for a jobs row's dedupe key from its parts; NULL when a part is unknown."""
    return " || ':' || ".join(escaped(part) for part in ("type", *parts))


# The text after `type:` of a key as enqueue wrote it.
REST = "substr(dedupe_key, length(type) + 2)"
CHANNELS = "array_to_string(ARRAY(SELECT jsonb_array_elements_text(payload->'channels')), '+')"

# Each type's key from the row's columns and payload, as the present code builds it.
NEW_KEY = f"""
    CASE type
        WHEN 'conversation_sync' THEN {key("lead_id", "payload->>'channel'")}
        WHEN 'sync_all' THEN CASE
            WHEN payload->>'after' IS NULL THEN {key("client_id", CHANNELS)}
            ELSE {key("client_id", CHANNELS, "'after'", "payload->>'after'")} END
        WHEN 'lead_scoring' THEN {key("client_id", "'email'", "payload->>'message_id'")}
        WHEN 'followup_send' THEN {key("payload->>'followup_id'", "payload->>'index'")}
        WHEN 'reactivation_send' THEN
            {key("client_id", "payload->>'reactivation_id'", "lead_id")}
        WHEN 'followups_tick' THEN CASE
            WHEN payload->>'part' IS NULL THEN {key("payload->>'slot'")}
            ELSE {key("payload->>'slot'", "'part'", "payload->>'part'")} END
        WHEN 'reactivations_tick' THEN CASE
            WHEN payload->>'part' IS NULL THEN {key("payload->>'slot'")}
            ELSE {key("payload->>'slot'", "'part'", "payload->>'part'")} END
    END
"""
# Any other key (email_inbound's webhook id, prune_jobs' hour, a type of a test's or a bench's
# own, or a known type missing a column): its text after `type:` is its one part.
ONE_PART_KEY = key(REST)

REWRITE_KEYS_UP = f"""
        UPDATE jobs AS j
        SET dedupe_key = r.new_key,
            payload = CASE WHEN j.type IN ('followup_send', 'reactivation_send') AND j.attempts > 0
                           THEN j.payload || jsonb_build_object('idempotency_key', j.dedupe_key)
                           ELSE j.payload END
        FROM (
            SELECT id, coalesce({NEW_KEY}, {ONE_PART_KEY}) AS new_key FROM jobs
            WHERE left(dedupe_key, length(type) + 1) = type || ':'
        ) AS r
        WHERE j.id = r.id AND j.dedupe_key <> r.new_key
        """  # noqa: S608 (built from the fixed SQL pieces above, no input)

# Back to `type:part1:part2`, unescaped, without the client part the old keys did not have.
REWRITE_KEYS_DOWN = f"""
        UPDATE jobs
        SET dedupe_key = type || ':' || {unescaped("r.rest")},
            payload = payload - 'idempotency_key'
        FROM (
            SELECT id AS job_id,
                   CASE WHEN type IN ('lead_scoring', 'reactivation_send')
                        THEN substr({REST}, strpos({REST}, ':') + 1)
                        ELSE {REST} END AS rest
            FROM jobs WHERE left(dedupe_key, length(type) + 1) = type || ':'
        ) AS r
        WHERE id = r.job_id
        """  # noqa: S608 (built from the fixed SQL pieces above, no input)

# Jobs of a lead carry its client (follow-up sends did not).
JOB_CLIENTS = """
        UPDATE jobs AS j SET client_id = l.client_id FROM leads AS l
        WHERE j.client_id IS NULL AND j.lead_id = l.id
        """

# An enrollment whose old key (`campaign:lead`) another enrollment shared never had a send of
# its own; enqueue it under its own key (the sends that did exist keep theirs).
SWALLOWED_SENDS = f"""
        INSERT INTO jobs (type, dedupe_key, dedupe_scope, client_id, lead_id, payload)
        SELECT 'reactivation_send',
               'reactivation_send:' || {escaped("e.client_id")} || ':'
                   || {escaped("e.reactivation_id")} || ':' || {escaped("e.lead_id")},
               'forever', e.client_id, e.lead_id,
               jsonb_build_object('reactivation_id', e.reactivation_id)
        FROM reactivation_enrollments AS e
        WHERE e.state = 'scheduled' AND EXISTS (
            SELECT 1 FROM reactivation_enrollments AS o
            WHERE o.reactivation_id || ':' || o.lead_id = e.reactivation_id || ':' || e.lead_id
              AND (o.reactivation_id, o.lead_id) <> (e.reactivation_id, e.lead_id))
        ORDER BY e.client_id, e.reactivation_id, e.lead_id
        ON CONFLICT (dedupe_key) WHERE dedupe_scope = 'forever' DO NOTHING
        """  # noqa: S608 (built from the fixed SQL pieces above, no input)


def execute(script: str) -> None:
    # One statement per execute: asyncpg prepares each, and a prepared statement is single.
    for statement in script.split(";\n"):
        if statement.strip():
            op.execute(statement)


def upgrade() -> None:
    execute(MESSAGES_UP)
    execute(CAMPAIGNS_UP)
    execute(JOB_CLIENTS)
    for statement in DROP_DEDUPE_INDEXES.split("; "):
        op.execute(statement)
    execute(REWRITE_KEYS_UP)
    execute(DEDUPE_INDEXES)
    execute(SWALLOWED_SENDS)


def downgrade() -> None:
    for statement in DROP_DEDUPE_INDEXES.split("; "):
        op.execute(statement)
    execute(REWRITE_KEYS_DOWN)
    execute(DEDUPE_INDEXES)
    execute(CAMPAIGNS_DOWN)
    execute(MESSAGES_DOWN)
