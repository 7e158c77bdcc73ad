"""One round trip per turn of a runner's loop: `store_and_claim` stores the outcomes of the
attempts that finished, then claims the next jobs, in one statement and one commit.

The fair claim must count each client's running jobs after every earlier claim committed, or
two claims at once could both take a client's last free place. It used to take a transaction
lock in a statement of its own (BEGIN, the lock, the claim, COMMIT: three round trips). In a
volatile PL/pgSQL function every statement reads a fresh snapshot, so the function takes the
lock and then claims, within the caller's one statement; the lock is held until that
statement's transaction commits.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Arguments: the outcomes as parallel arrays, one element per attempt, sorted by job id
# (d_ids, d_tokens, d_statuses, d_delays, d_errors, d_give_backs), then the claim: up to
# c_limit jobs leased to c_owner under c_token for c_lease_s seconds, at most c_cap running per
# client, with turns (c_fair) or in plain run_at order. c_limit 0 claims nothing.
#
# Rows: one per outcome stored (`stored`, its id and nothing else), then one per job claimed.
#
# Outcomes: each row is guarded by its lease, so a runner that lost a job changes nothing and
# the rows returned name what changed. succeeded/failed end the job; pending comes back after
# its delay (a retry keeps its attempt, a release or a throttle gives it back) and stays in the
# active dedupe index, so no key can clash; an error, when given, replaces last_error. Sorted
# ids make overlapping writers lock rows in one order.
#
# Fair claim (c_fair): expired leases first (their runner died), then due pending jobs,
# clients taking turns. Jobs group by client ('' for jobs of no client; client ids are never
# empty). `groups` finds each group with due jobs by skipping along jobs_due_group (one probe
# per group, however long its backlog); each group offers its first jobs in its own order
# (priority, lower first, then run_at), no more than its free places (c_cap less its jobs
# running under a live lease; the group of no client has no cap). The offers are taken in
# turns: every group's first before any group's second, a group with fewer jobs running
# first, and among equals the group served longest ago (client_turns, which each claim moves
# on for the groups it served): a client with one job due starts it at the next free slot
# however many another has queued. An expired lease is taken back whatever its client's
# count: its runner is gone. The advisory lock keeps fair claims apart, so rows are not locked
# while read; the UPDATE re-checks each row's status against a concurrent cancel. The claim
# runs after this call's own outcomes are stored, so a place they free is free to it.
#
# FIFO claim (not c_fair; the benchmarks' baseline): no turns, caps or priority: expired
# leases first, then due pending jobs in run_at order. SKIP LOCKED lets runners claim side by
# side without waiting; each branch reads only its partial index; UNION ALL with LIMIT stops
# reading once full.
STORE_AND_CLAIM = """
CREATE FUNCTION store_and_claim(
    d_ids bigint[], d_tokens uuid[], d_statuses text[], d_delays float8[], d_errors text[],
    d_give_backs boolean[],
    c_limit integer, c_token uuid, c_owner text, c_lease_s float8, c_cap integer,
    c_fair boolean
) RETURNS TABLE (
    id bigint, type text, payload text, attempts integer, max_attempts integer,
    client_id text, lead_id text, dedupe_key text, stale boolean, stored boolean
) LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
BEGIN
    IF cardinality(d_ids) > 0 THEN
        RETURN QUERY
        UPDATE jobs AS j
        SET status = t.status,
            finished_at = CASE WHEN t.status = 'pending' THEN NULL ELSE now() END,
            run_at = CASE WHEN t.status = 'pending'
                          THEN now() + make_interval(secs => t.delay_s)
                          ELSE j.run_at END,
            attempts = CASE WHEN t.give_back THEN greatest(j.attempts - 1, 0)
                            ELSE j.attempts END,
            last_error = coalesce(t.error, j.last_error),
            lock_token = NULL, locked_until = NULL
        FROM unnest(d_ids, d_tokens, d_statuses, d_delays, d_errors, d_give_backs)
             AS t(id, token, status, delay_s, error, give_back)
        WHERE j.id = t.id AND j.lock_token = t.token AND j.status = 'running'
        RETURNING j.id, NULL::text, NULL::text, NULL::integer, NULL::integer, NULL::text,
                  NULL::text, NULL::text, NULL::boolean, true;
    END IF;
    IF c_limit <= 0 THEN
        RETURN;
    END IF;
    IF NOT c_fair THEN
        RETURN QUERY
        WITH expired AS (
            SELECT id, true AS stale FROM jobs
            WHERE status = 'running' AND locked_until < now()
            ORDER BY locked_until
            LIMIT c_limit
            FOR UPDATE SKIP LOCKED
        ), due AS (
            SELECT id, false AS stale FROM jobs
            WHERE status = 'pending' AND run_at <= now()
            ORDER BY run_at, id
            LIMIT c_limit
            FOR UPDATE SKIP LOCKED
        ), picked AS (
            (SELECT id, stale FROM expired) UNION ALL (SELECT id, stale FROM due) LIMIT c_limit
        )
        UPDATE jobs AS j
        SET status = 'running', attempts = j.attempts + 1, lock_token = c_token,
            locked_by = c_owner, locked_until = now() + make_interval(secs => c_lease_s),
            started_at = now(), finished_at = NULL
        FROM picked
        WHERE j.id = picked.id
        RETURNING j.id, j.type, j.payload::text, j.attempts, j.max_attempts, j.client_id,
                  j.lead_id, j.dedupe_key, picked.stale, false;
        RETURN;
    END IF;
    -- The next statement reads a snapshot taken after the lock: every earlier claim's jobs.
    PERFORM pg_advisory_xact_lock(7240912);
    RETURN QUERY
    WITH RECURSIVE expired AS (
        SELECT id, true AS stale FROM jobs
        WHERE status = 'running' AND locked_until < now()
        ORDER BY locked_until
        LIMIT c_limit
        FOR UPDATE SKIP LOCKED
    ), running AS (
        SELECT coalesce(client_id, '') AS g, count(*) AS n FROM jobs
        WHERE status = 'running' AND locked_until >= now()
        GROUP BY 1
    ), groups AS (
        (SELECT coalesce(client_id, '') AS g FROM jobs
         WHERE status = 'pending' AND run_at <= now()
         ORDER BY coalesce(client_id, '') LIMIT 1)
        UNION ALL
        SELECT (SELECT coalesce(j.client_id, '') FROM jobs j
                WHERE j.status = 'pending' AND j.run_at <= now()
                  AND coalesce(j.client_id, '') > groups.g
                ORDER BY coalesce(j.client_id, '') LIMIT 1)
        FROM groups WHERE groups.g IS NOT NULL
    ), offers AS (
        SELECT o.id, o.priority, o.run_at, coalesce(r.n, 0) AS running, t.served_at,
               row_number() OVER (PARTITION BY g.g ORDER BY o.priority, o.run_at, o.id) AS turn
        FROM groups g
        LEFT JOIN running r ON r.g = g.g
        LEFT JOIN client_turns t ON t.client_group = g.g
        CROSS JOIN LATERAL (
            SELECT id, priority, run_at FROM jobs
            WHERE status = 'pending' AND run_at <= now() AND coalesce(client_id, '') = g.g
            ORDER BY priority, run_at, id
            LIMIT CASE WHEN g.g = '' THEN c_limit
                       ELSE greatest(least(c_limit, c_cap - coalesce(r.n, 0)), 0) END
        ) o
        WHERE g.g IS NOT NULL
    ), due AS (
        SELECT id, false AS stale FROM offers
        ORDER BY running + turn, served_at NULLS FIRST, priority, run_at, id
        LIMIT c_limit
    ), picked AS (
        (SELECT id, stale FROM expired) UNION ALL (SELECT id, stale FROM due) LIMIT c_limit
    ), claimed AS (
        UPDATE jobs AS j
        SET status = 'running', attempts = j.attempts + 1, lock_token = c_token,
            locked_by = c_owner, locked_until = now() + make_interval(secs => c_lease_s),
            started_at = now(), finished_at = NULL
        FROM picked
        WHERE j.id = picked.id
          AND j.status = CASE WHEN picked.stale THEN 'running' ELSE 'pending' END
        RETURNING j.id, j.type, j.payload::text AS payload, j.attempts, j.max_attempts,
                  j.client_id, j.lead_id, j.dedupe_key, picked.stale
    ), served AS (
        INSERT INTO client_turns AS t (client_group, served_at)
        SELECT g, clock_timestamp()
        FROM (SELECT DISTINCT coalesce(client_id, '') AS g FROM claimed) c
        ORDER BY g
        ON CONFLICT (client_group) DO UPDATE SET served_at = excluded.served_at
    )
    SELECT c.id, c.type, c.payload, c.attempts, c.max_attempts, c.client_id, c.lead_id,
           c.dedupe_key, c.stale, false FROM claimed c;
END
$fn$
"""


def upgrade() -> None:
    op.execute(STORE_AND_CLAIM)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION store_and_claim(bigint[], uuid[], text[], float8[], text[], boolean[],"
        " integer, uuid, text, float8, integer, boolean)"
    )
