"""Workflows in PostgreSQL (schema version 5): tables, and the release of dependents
as a trigger on the jobs table, so it runs inside the very statement that records
the parent's outcome.

The layout (docs/workflows.md, "How it scales"): one ``memqueue_links`` row per
edge (child waits on parent), one ``memqueue_waits`` counter per deferred job,
one ``memqueue_groups`` row per group member; no row that every completion
rewrites. A job that takes part in a workflow has ``workflow = true``; the
trigger's ``WHEN`` clause tests that column first, so a plain job's outcome
costs nothing more (no function call).

Every write of an outcome (a finish, a consumer's outcome-and-claim statement, a
cancel, a take-over; and any ``UPDATE`` a person makes by hand) that moves a
workflow job into a final status fires ``memqueue_settled``, which calls
``memqueue_release``: it marks the job's links used (with its result, for a
chain's link or a chord's callback), and for each child still deferred either
counts the success down or cancels it, and so on down (iteratively, not by
nested triggers: a chain of 10,000 links cancels in one call). The child's row is
locked (``SELECT ... FOR UPDATE``) before its counter is decremented (``UPDATE
... RETURNING``), so two members of a chord finishing at the same instant in two
transactions are serialised on the callback's row: the second sees the first's
decrement and link result once the first commits, and exactly one of them sees
the counter reach 0 and releases the callback. Every lock is taken from parent to
child, in the direction of the workflow's edges, so these locks cannot deadlock.
"""

from __future__ import annotations

#: The final statuses (as schema.FINISHED_SQL; schema.py imports this module).
_FINAL = "('succeeded', 'failed', 'cancelled', 'aborted')"

#: Migration 5's statements (``{s}`` is the schema): see the module's docstring.
MIGRATION: tuple[str, ...] = (
    "ALTER TABLE {s}.memqueue_jobs ADD COLUMN IF NOT EXISTS workflow boolean NOT NULL DEFAULT false",
    # Deferred jobs count toward MEMQUEUE_MAXSIZE: the count walks this (small) index.
    "CREATE INDEX memqueue_jobs_deferred ON {s}.memqueue_jobs (ns) WHERE status = 'deferred'",
    """CREATE TABLE {s}.memqueue_links (
    ns text NOT NULL,
    parent text NOT NULL,
    child text NOT NULL,
    position integer NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    done boolean NOT NULL DEFAULT false,
    result text
)""",
    "CREATE INDEX memqueue_links_parent ON {s}.memqueue_links (ns, parent, seq)",
    "CREATE INDEX memqueue_links_child ON {s}.memqueue_links (ns, child, position)",
    # ``digest``: the store's channels (memqueue_<digest>, memqueue_d_<digest>), to
    # announce a released job to idle workers and a cancelled one to its waiters.
    """CREATE TABLE {s}.memqueue_waits (
    ns text NOT NULL,
    child text NOT NULL,
    remaining integer NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (ns, child)
)""",
    """CREATE TABLE {s}.memqueue_groups (
    ns text NOT NULL,
    grp text NOT NULL,
    idx integer NOT NULL,
    job_id text NOT NULL,
    PRIMARY KEY (ns, grp, idx)
)""",
    "CREATE INDEX memqueue_groups_job ON {s}.memqueue_groups (ns, job_id)",
    """CREATE FUNCTION {s}.memqueue_release(p_ns text, p_id text, p_now double precision) RETURNS text[]
LANGUAGE plpgsql AS $release$
DECLARE
    v_stack text[] := ARRAY[p_id];
    v_why text[] := ARRAY[NULL::text];
    v_touched text[] := ARRAY[]::text[];
    v_n integer;
    v_pid text;
    v_reason text;
    v_parent record;
    v_edge record;
    v_child record;
    v_left integer;
    v_digest text;
    v_bind text;
    v_bound text;
    v_args text;
    v_inner text;
    v_error text;
BEGIN
    -- the cancels below are final outcomes too: their trigger must not start a nested release
    PERFORM set_config('memqueue.releasing', 'on', true);
    DELETE FROM {s}.memqueue_waits WHERE ns = p_ns AND child = p_id;
    WHILE cardinality(v_stack) > 0 LOOP
        v_n := cardinality(v_stack);
        v_pid := v_stack[v_n];
        v_reason := v_why[v_n];
        v_stack := v_stack[1:v_n - 1];
        v_why := v_why[1:v_n - 1];
        SELECT task, status, result, error INTO v_parent FROM {s}.memqueue_jobs WHERE id = v_pid AND ns = p_ns;
        FOR v_edge IN
            WITH used AS (
                UPDATE {s}.memqueue_links SET done = true,
                    result = CASE WHEN v_parent.status = 'succeeded' AND position >= 0 THEN v_parent.result END
                WHERE ns = p_ns AND parent = v_pid AND NOT done RETURNING child, seq)
            SELECT child FROM used ORDER BY seq
        LOOP
            SELECT status, args, options, lane INTO v_child FROM {s}.memqueue_jobs
                WHERE id = v_edge.child AND ns = p_ns FOR UPDATE;
            IF NOT FOUND OR v_child.status <> 'deferred' THEN
                CONTINUE;  -- cancelled already (by a person, or by another parent's failure)
            END IF;
            IF v_parent.status = 'succeeded' THEN
                UPDATE {s}.memqueue_waits SET remaining = remaining - 1 WHERE ns = p_ns AND child = v_edge.child
                    RETURNING remaining, digest INTO v_left, v_digest;
                IF coalesce(v_left, 0) > 0 THEN
                    CONTINUE;
                END IF;
                v_args := v_child.args;
                v_bind := CASE WHEN v_child.options IS NULL THEN NULL ELSE v_child.options::json ->> 'bind' END;
                v_bound := NULL;
                IF v_bind = 'first' THEN
                    SELECT coalesce(max(l.result), 'null') INTO v_bound FROM {s}.memqueue_links l
                        WHERE l.ns = p_ns AND l.child = v_edge.child AND l.position = 0;
                ELSIF v_bind = 'list' THEN
                    SELECT '[' || coalesce(string_agg(coalesce(l.result, 'null'), ',' ORDER BY l.position), '')
                        || ']' INTO v_bound FROM {s}.memqueue_links l
                        WHERE l.ns = p_ns AND l.child = v_edge.child AND l.position >= 0;
                END IF;
                IF v_bound IS NOT NULL THEN  -- as storage.base.released_args: on the text
                    v_inner := btrim(v_args, E' \\t\\r\\n');
                    v_inner := btrim(substr(v_inner, 2, length(v_inner) - 2), E' \\t\\r\\n');
                    v_args := '[' || v_bound || CASE WHEN v_inner = '' THEN '' ELSE ',' || v_inner END || ']';
                END IF;
                UPDATE {s}.memqueue_jobs SET status = 'queued', args = v_args, seq = DEFAULT
                    WHERE id = v_edge.child AND ns = p_ns;
                UPDATE {s}.memqueue_links SET result = NULL
                    WHERE ns = p_ns AND child = v_edge.child AND result IS NOT NULL;
                DELETE FROM {s}.memqueue_links l WHERE l.ns = p_ns AND l.child = v_edge.child
                    AND NOT EXISTS (SELECT 1 FROM {s}.memqueue_jobs j WHERE j.id = l.parent);
                DELETE FROM {s}.memqueue_waits WHERE ns = p_ns AND child = v_edge.child;
                IF v_digest IS NOT NULL THEN
                    PERFORM pg_notify('memqueue_' || v_digest, 'q:' || v_child.lane);
                END IF;
            ELSE
                v_error := coalesce(v_reason, CASE WHEN v_parent.status = 'cancelled'
                    THEN 'dependency ' || v_pid || ' (' || v_parent.task || ') was cancelled'
                    ELSE 'dependency ' || v_pid || ' (' || v_parent.task || ') failed: '
                        || coalesce(v_parent.error, 'None') END);
                UPDATE {s}.memqueue_jobs SET status = 'cancelled', finished_at = p_now, error = v_error,
                    token = NULL WHERE id = v_edge.child AND ns = p_ns;
                v_digest := NULL;
                DELETE FROM {s}.memqueue_waits WHERE ns = p_ns AND child = v_edge.child RETURNING digest INTO v_digest;
                IF v_digest IS NOT NULL AND EXISTS (SELECT 1 FROM {s}.memqueue_waiters w
                        WHERE w.ns = p_ns AND w.job_id IN (v_edge.child, '*')) THEN
                    PERFORM pg_notify('memqueue_d_' || v_digest, 'd:' || v_edge.child);
                END IF;
                v_stack := v_stack || v_edge.child;
                v_why := v_why || v_error;
            END IF;
            v_touched := v_touched || v_edge.child;
        END LOOP;
    END LOOP;
    PERFORM set_config('memqueue.releasing', 'off', true);
    RETURN v_touched;
END
$release$""",
    """CREATE FUNCTION {s}.memqueue_settled() RETURNS trigger LANGUAGE plpgsql AS $settled$
BEGIN
    IF coalesce(current_setting('memqueue.releasing', true), '') <> 'on' THEN
        PERFORM {s}.memqueue_release(NEW.ns, NEW.id,
                                     coalesce(NEW.finished_at, extract(epoch FROM clock_timestamp())));
    END IF;
    RETURN NULL;
END
$settled$""",
    "CREATE TRIGGER memqueue_settled AFTER UPDATE OF status ON {s}.memqueue_jobs FOR EACH ROW"
    f" WHEN (NEW.workflow AND NEW.status IN {_FINAL} AND OLD.status NOT IN {_FINAL})"
    " EXECUTE FUNCTION {s}.memqueue_settled()",
    # A workflow job deleted (retention, purge, a delete): its group row, its counter, and
    # the links nobody needs any more (a link to a child still deferred keeps the result it
    # carries for that child; a link whose parent is gone goes when its child goes).
    """CREATE FUNCTION {s}.memqueue_forget() RETURNS trigger LANGUAGE plpgsql AS $forget$
BEGIN
    DELETE FROM {s}.memqueue_links l WHERE l.ns = OLD.ns AND l.parent = OLD.id
        AND NOT EXISTS (SELECT 1 FROM {s}.memqueue_jobs j WHERE j.id = l.child AND j.status = 'deferred');
    DELETE FROM {s}.memqueue_links l WHERE l.ns = OLD.ns AND l.child = OLD.id
        AND NOT EXISTS (SELECT 1 FROM {s}.memqueue_jobs j WHERE j.id = l.parent);
    DELETE FROM {s}.memqueue_groups WHERE ns = OLD.ns AND job_id = OLD.id;
    DELETE FROM {s}.memqueue_waits WHERE ns = OLD.ns AND child = OLD.id;
    RETURN NULL;
END
$forget$""",
    "CREATE TRIGGER memqueue_forget AFTER DELETE ON {s}.memqueue_jobs FOR EACH ROW WHEN (OLD.workflow)"
    " EXECUTE FUNCTION {s}.memqueue_forget()",
)

__all__ = ["MIGRATION"]
