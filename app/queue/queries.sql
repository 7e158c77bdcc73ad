-- enqueue_active --
-- One statement, race-free: the partial unique index decides, a duplicate bumps enqueue_count
-- and returns the live job; xmax <> 0 tells an updated (deduplicated) row from a fresh insert.
-- A duplicate asked for at a higher priority (a person's /sync of a lead whose bulk sync is
-- still pending) raises the live job's: lower runs first.
-- $9, the enqueuing trace's W3C traceparent (NULL when tracing is off), is set on insert only:
-- the update leaves a live job's own.
INSERT INTO jobs AS j (type, dedupe_key, dedupe_scope, client_id, lead_id, payload, max_attempts,
                       run_at, priority, traceparent)
VALUES ($1, $2, 'active', $3, $4, $5::jsonb, $6, coalesce($7::timestamptz, now()), $8, $9)
ON CONFLICT (dedupe_key) WHERE dedupe_scope = 'active' AND status IN ('pending', 'running')
DO UPDATE SET enqueue_count = j.enqueue_count + 1, priority = least(j.priority, excluded.priority)
RETURNING j.id, j.type, j.status, (j.xmax <> '0'::xid) AS deduplicated

-- enqueue_forever --
-- Same as enqueue_active, against the index that keeps a key unique across all rows.
INSERT INTO jobs AS j (type, dedupe_key, dedupe_scope, client_id, lead_id, payload, max_attempts,
                       run_at, priority, traceparent)
VALUES ($1, $2, 'forever', $3, $4, $5::jsonb, $6, coalesce($7::timestamptz, now()), $8, $9)
ON CONFLICT (dedupe_key) WHERE dedupe_scope = 'forever'
DO UPDATE SET enqueue_count = j.enqueue_count + 1, priority = least(j.priority, excluded.priority)
RETURNING j.id, j.type, j.status, (j.xmax <> '0'::xid) AS deduplicated

-- enqueue_many_active --
-- Fan-out in one statement: parallel arrays unnested into rows ($10: the type's priority, for
-- a row that names none). Keys arrive unique and sorted (one row may not be updated twice by
-- one statement; one order avoids deadlocks between overlapping batches), with n = how many
-- requests each key stands for. A column that is the
-- same default for every row comes as NULL: unnest pads it with NULLs, coalesce fills them in.
-- $11: the enqueuing trace's traceparent, for the rows inserted only.
INSERT INTO jobs AS j (type, dedupe_key, dedupe_scope, client_id, lead_id, payload, max_attempts,
                       run_at, enqueue_count, priority, traceparent)
SELECT $1, t.k, 'active', t.c, t.l, coalesce(t.p, '{}')::jsonb, $2, coalesce(t.r, now()),
       coalesce(t.n, 1), coalesce(t.q, $10), $11
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::int[],
            $9::int2[])
     AS t(k, c, l, p, r, n, q)
ON CONFLICT (dedupe_key) WHERE dedupe_scope = 'active' AND status IN ('pending', 'running')
DO UPDATE SET enqueue_count = j.enqueue_count + excluded.enqueue_count,
              priority = least(j.priority, excluded.priority)
RETURNING j.id, j.type, j.status, j.dedupe_key, (j.xmax <> '0'::xid) AS deduplicated

-- enqueue_many_forever --
-- Same as enqueue_many_active, against the forever index.
INSERT INTO jobs AS j (type, dedupe_key, dedupe_scope, client_id, lead_id, payload, max_attempts,
                       run_at, enqueue_count, priority, traceparent)
SELECT $1, t.k, 'forever', t.c, t.l, coalesce(t.p, '{}')::jsonb, $2, coalesce(t.r, now()),
       coalesce(t.n, 1), coalesce(t.q, $10), $11
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::int[],
            $9::int2[])
     AS t(k, c, l, p, r, n, q)
ON CONFLICT (dedupe_key) WHERE dedupe_scope = 'forever'
DO UPDATE SET enqueue_count = j.enqueue_count + excluded.enqueue_count,
              priority = least(j.priority, excluded.priority)
RETURNING j.id, j.type, j.status, j.dedupe_key, (j.xmax <> '0'::xid) AS deduplicated

-- claim --
-- Store the outcomes of the attempts that finished ($1-$6: parallel arrays, one element per
-- attempt, sorted by id; empty for none), then lease up to $7 due jobs to owner $9 under token
-- $8 for $10 seconds: with clients taking turns and at most $11 running per client ($12 true),
-- or in plain run_at order ($12 false, the benchmarks' baseline). One statement, one commit:
-- store_and_claim (migration 0010, which spells out both claims) takes the fair claim's lock
-- and then reads a snapshot taken after it. Rows: one per outcome stored (`stored`, its id
-- only), then one per job claimed (`stale`: taken back from a runner whose lease expired).
SELECT id, type, payload, attempts, max_attempts, client_id, lead_id, dedupe_key, stale, stored
FROM store_and_claim($1::bigint[], $2::uuid[], $3::text[], $4::float8[], $5::text[],
                     $6::bool[], $7::int, $8::uuid, $9::text, $10::float8, $11::int, $12::bool)

-- record_outcomes --
-- Every attempt that finished together, in one statement and one commit, when no claim goes
-- with them (store_and_claim, claiming nothing). Each row is guarded by its lease: a runner
-- that lost a job changes nothing, and the ids returned name what changed.
SELECT id FROM store_and_claim($1::bigint[], $2::uuid[], $3::text[], $4::float8[], $5::text[],
                               $6::bool[], 0, NULL, NULL, NULL, NULL, NULL)

-- count_due --
-- What the next runner would find: due pending jobs plus running jobs whose lease expired,
-- and how long the oldest due one has waited; each part reads one partial index.
SELECT (SELECT count(*) FROM jobs WHERE status = 'pending' AND run_at <= now())
     + (SELECT count(*) FROM jobs WHERE status = 'running' AND locked_until < now()) AS due,
       coalesce(extract(epoch FROM now() - (SELECT min(run_at) FROM jobs
                                           WHERE status = 'pending' AND run_at <= now())), 0)
           AS oldest_s

-- count_due_of_client --
-- count_due for client $1's jobs alone: the same partial indexes, their rows filtered.
SELECT (SELECT count(*) FROM jobs WHERE status = 'pending' AND run_at <= now() AND client_id = $1)
     + (SELECT count(*) FROM jobs WHERE status = 'running' AND locked_until < now()
                                    AND client_id = $1) AS due,
       coalesce(extract(epoch FROM now() - (SELECT min(run_at) FROM jobs
                                           WHERE status = 'pending' AND run_at <= now()
                                             AND client_id = $1)), 0)
           AS oldest_s

-- queue_last_hour --
-- The dashboard's chart: the last 60 UTC minutes, the current one last. For each, the jobs
-- that finished in it by outcome, and the due backlog at its end (for the current minute: now).
-- A job waited from greatest(run_at, created_at) until its latest attempt started or it
-- finished, whichever came first; only that latest wait is known, as a retry moves run_at and
-- started_at on. A wait adds 1 to the backlog from the first sampled instant at or after its
-- start up to the first at or after its end; the running sum of those steps is the backlog (a
-- wait within one minute's interval is no step at all). Reads the hour's finished jobs through
-- jobs_finished and the pending and running ones through their indexes, never the whole
-- table. date_trunc cuts minutes in the session's time zone, and every zone's offset since
-- 1972 is whole minutes, so these are UTC minutes in any. $1: one client's jobs only, or NULL
-- for every client's.
WITH span AS (
    SELECT date_trunc('minute', now()) - interval '59 minutes' AS first
), waits AS (
    SELECT j.status, j.finished_at, greatest(j.run_at, j.created_at) AS since,
           least(CASE WHEN j.started_at >= j.run_at THEN j.started_at END, j.finished_at) AS until
    FROM jobs j
    -- The bound written out, not read from span: the planner then sees how few rows it takes.
    WHERE j.status IN ('succeeded', 'failed', 'cancelled')
      AND j.finished_at >= date_trunc('minute', now()) - interval '59 minutes'
      AND ($1::text IS NULL OR j.client_id = $1)
    UNION ALL
    SELECT status, NULL, greatest(run_at, created_at), NULL FROM jobs
    WHERE status = 'pending' AND run_at <= now() AND ($1::text IS NULL OR client_id = $1)
    UNION ALL
    SELECT status, NULL, greatest(run_at, created_at), started_at FROM jobs
    WHERE status = 'running' AND ($1::text IS NULL OR client_id = $1)
), minutes AS (
    -- Each instant as the minute it counts in: finished in minute `done` (NULL: not finished);
    -- waiting from the sample of minute `from_m` (NULL: no wait) to that of `to_m` (NULL: still
    -- waiting). A minute is sampled at its end, the current one at now(); an instant counts
    -- at the first sample at or after it, and an instant before the hour at the first sample.
    -- Jobs alike in all four are counted together, so what follows reads a few hundred rows.
    SELECT w.status, date_trunc('minute', w.finished_at) AS done,
           CASE WHEN w.since <= now() AND (w.until IS NULL OR w.until > w.since)
                THEN greatest(date_trunc('minute', w.since - interval '1 microsecond'), s.first)
           END AS from_m,
           CASE WHEN w.until <= now() AND w.until > w.since
                THEN greatest(date_trunc('minute', w.until - interval '1 microsecond'), s.first)
           END AS to_m,
           count(*) AS n
    FROM waits w, span s
    GROUP BY 1, 2, 3, 4
), steps AS (
    SELECT from_m AS minute, n AS delta FROM minutes
    WHERE from_m IS NOT NULL AND from_m IS DISTINCT FROM to_m
    UNION ALL
    SELECT to_m, -n FROM minutes WHERE to_m <> from_m
), backlog_steps AS (
    SELECT minute, sum(delta) AS delta FROM steps GROUP BY minute
), outcomes AS (
    SELECT done AS minute,
           sum(n) FILTER (WHERE status = 'succeeded') AS succeeded,
           sum(n) FILTER (WHERE status = 'failed') AS failed,
           sum(n) FILTER (WHERE status = 'cancelled') AS cancelled
    FROM minutes WHERE done IS NOT NULL
    GROUP BY done
)
SELECT m.minute,
       coalesce(o.succeeded, 0)::bigint AS succeeded, coalesce(o.failed, 0)::bigint AS failed,
       coalesce(o.cancelled, 0)::bigint AS cancelled,
       (sum(coalesce(b.delta, 0)) OVER (ORDER BY m.minute))::bigint AS backlog
FROM span
CROSS JOIN generate_series(span.first, span.first + interval '59 minutes', interval '1 minute')
     AS m(minute)
LEFT JOIN outcomes o ON o.minute = m.minute
LEFT JOIN backlog_steps b ON b.minute = m.minute
ORDER BY m.minute

-- record_invocation --
-- A drain's summary, kept for operators; pruned with the jobs. It began $3 seconds ago (timed
-- by the runner), on the database's clock like finished_at, so intervals can be compared.
INSERT INTO runner_invocations (invocation_id, summary, started_at)
VALUES ($1, $2::jsonb, clock_timestamp() - make_interval(secs => $3::float8))
ON CONFLICT (invocation_id) DO UPDATE
SET summary = excluded.summary, started_at = excluded.started_at, finished_at = now()

-- recent_invocations --
SELECT invocation_id, finished_at, summary::text AS summary FROM runner_invocations
ORDER BY finished_at DESC LIMIT $1

-- queue_counts --
-- $1: one client's jobs only, or NULL for every client's.
SELECT status, type, count(*) AS count FROM jobs
WHERE $1::text IS NULL OR client_id = $1
GROUP BY status, type ORDER BY type, status

-- manual_retry --
-- failed/cancelled -> pending, unless an active twin holds the key (the caller answers 409).
-- A twin that appears concurrently surfaces as a unique violation the caller catches in a
-- savepoint; the NOT EXISTS keeps that to a true race.
UPDATE jobs AS j
SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL
WHERE j.id = $1 AND j.status IN ('failed', 'cancelled')
  AND NOT (j.dedupe_scope = 'active' AND EXISTS (
      SELECT 1 FROM jobs t
      WHERE t.dedupe_key = j.dedupe_key AND t.dedupe_scope = 'active'
        AND t.status IN ('pending', 'running') AND t.id <> j.id))
RETURNING j.id

-- active_twin --
SELECT t.id FROM jobs j
JOIN jobs t ON t.dedupe_key = j.dedupe_key AND t.dedupe_scope = 'active'
           AND t.status IN ('pending', 'running') AND t.id <> j.id
WHERE j.id = $1
LIMIT 1

-- cancel --
UPDATE jobs SET status = 'cancelled', finished_at = now()
WHERE id = $1 AND status = 'pending'
RETURNING id

-- get_job --
-- $2, when given, scopes the read to one client's jobs (a job of no client is nobody's).
SELECT id, type, status, dedupe_key, client_id, lead_id, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, last_error, enqueue_count
FROM jobs WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)

-- list_jobs --
-- A NULL filter matches everything; newest first by id (ids only grow).
SELECT id, type, status, dedupe_key, client_id, lead_id, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, last_error, enqueue_count
FROM jobs
WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2)
ORDER BY id DESC LIMIT $3

-- list_client_jobs --
-- list_jobs for one client ($4), read backwards along jobs_client. A statement of its own: an
-- optional "$4 IS NULL OR client_id = $4" is planned without the index (100-200 ms against
-- 0.1-0.4 ms for a client's 100 newest among a million jobs).
SELECT id, type, status, dedupe_key, client_id, lead_id, priority, attempts, max_attempts, run_at,
       created_at, started_at, finished_at, last_error, enqueue_count
FROM jobs
WHERE client_id = $4 AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR type = $2)
ORDER BY id DESC LIMIT $3

-- expired_jobs --
-- Finished jobs past their retention ($1 days; failed ones $2 days), oldest first, read through
-- jobs_finished; prune_jobs deletes the same rows.
SELECT id FROM jobs
WHERE status IN ('succeeded', 'failed', 'cancelled')
  AND finished_at < now() - $1::float8 * interval '1 day'
  AND (status <> 'failed' OR finished_at < now() - $2::float8 * interval '1 day')
ORDER BY finished_at
LIMIT $3

-- prune_jobs --
-- One bounded batch of expired_jobs deleted.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < now() - $1::float8 * interval '1 day'
      AND (status <> 'failed' OR finished_at < now() - $2::float8 * interval '1 day')
    ORDER BY finished_at
    LIMIT $3
)

-- prune_invocations --
DELETE FROM runner_invocations WHERE finished_at < now() - $1::float8 * interval '1 day'

-- acquire_kick_slot --
-- A slot for one more kicked runner ($1 token, $2 RUNNER_KICK_MAX, $3 seconds until a slot
-- no runner took up lapses, $4 the window in seconds), or no row: $2 kicked runners are on
-- their way or running, or one was kicked within the window. A live holder counts due jobs
-- after it lets go (release_kick_slot), so a job no kick was sent for is still found. Two
-- kickers racing for one free slot: the primary key lets one in; the other's conflict finds
-- a live row, changes nothing and answers no row. A lapsed row (its holder died) is taken over.
WITH live AS (
    SELECT slot, kicked_at FROM runner_kicks WHERE expires_at > now()
)
INSERT INTO runner_kicks AS k (slot, token, expires_at)
SELECT s, $1::uuid, now() + make_interval(secs => $3::float8)
FROM generate_series(0, $2::int - 1) AS s
WHERE s NOT IN (SELECT slot FROM live)
  AND (SELECT count(*) FROM live) < $2::int
  AND NOT EXISTS (SELECT 1 FROM live WHERE kicked_at > now() - make_interval(secs => $4::float8))
ORDER BY s
LIMIT 1
ON CONFLICT (slot) DO UPDATE
SET token = excluded.token, kicked_at = excluded.kicked_at, started_at = NULL,
    expires_at = excluded.expires_at
WHERE k.expires_at <= now()
RETURNING k.slot

-- confirm_kick_slot --
-- The kicked runner takes up its slot ($1) for its whole drain ($2 seconds, after which a
-- runner that died lets it lapse), and learns when it was kicked. No row: the kicker gave the
-- kick up, or it lapsed, before the runner came; that runner must not drain, or more than
-- RUNNER_KICK_MAX could.
UPDATE runner_kicks
SET started_at = now(), expires_at = now() + make_interval(secs => $2::float8)
WHERE token = $1::uuid AND started_at IS NULL AND expires_at > now()
RETURNING kicked_at

-- give_up_kick_slot --
-- A kick that failed frees its slot, unless its runner took it up after all.
DELETE FROM runner_kicks WHERE token = $1::uuid AND started_at IS NULL

-- release_kick_slot --
-- A kicked runner is done: its slot is free for the next kick.
DELETE FROM runner_kicks WHERE token = $1::uuid

-- due_after_kick --
-- Run once a kicked runner's slot is free: the jobs due now (as count_due), and those of them
-- that became due after $1 (shortly before the runner was kicked), which that runner may
-- never have seen; each part reads one partial index.
SELECT (SELECT count(*) FROM jobs WHERE status = 'pending' AND run_at <= now())
     + (SELECT count(*) FROM jobs WHERE status = 'running' AND locked_until < now()) AS due,
       (SELECT count(*) FROM jobs WHERE status = 'pending' AND run_at <= now() AND run_at > $1)
           AS fresh

-- take_token --
-- One token from bucket $1 ($2 seconds between tokens), shared by every process: GCRA keeps
-- one instant per bucket, `tat`, when its next token is free. A take is granted when that is
-- at most $3 seconds ahead (the taker waits for it: a reservation), and moves tat one interval
-- on; refused, it changes nothing. wait_s: granted, how long until the reserved token is due;
-- refused, until the next token is free. No burst: tokens are evenly spaced, so no window of
-- w seconds grants more than w / $2 + 1. SET reads the row as it was, so `granted` and `tat`
-- agree; the row lock orders the takers.
INSERT INTO rate_buckets AS b (key, tat, granted)
VALUES ($1, now() + make_interval(secs => $2::float8), true)
ON CONFLICT (key) DO UPDATE
SET granted = greatest(b.tat, now()) <= now() + make_interval(secs => $3::float8),
    tat = CASE WHEN greatest(b.tat, now()) <= now() + make_interval(secs => $3::float8)
               THEN greatest(b.tat, now()) + make_interval(secs => $2::float8)
               ELSE b.tat END
RETURNING b.granted,
          greatest(extract(epoch FROM b.tat - now())
                   - CASE WHEN b.granted THEN $2::float8 ELSE 0 END, 0)::float8 AS wait_s

-- hold_off_bucket --
-- The provider said to wait $2 seconds (a 429's Retry-After): no token of bucket $1 before
-- then, whatever the bucket held.
INSERT INTO rate_buckets AS b (key, tat, granted)
VALUES ($1, now() + make_interval(secs => $2::float8), false)
ON CONFLICT (key) DO UPDATE
SET tat = greatest(b.tat, excluded.tat), granted = false
