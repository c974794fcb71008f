"""Every statement of the store, as text made once per store (its schema in the table names).

Each change of a job is one statement (with the ``NOTIFY`` it causes, sent at
commit), written so that running it twice after a lost reply changes nothing
more: inserts are ``ON CONFLICT DO NOTHING``, an outcome is written only while
the job runs for this owner, a transition only from the statuses it names.
"""

from __future__ import annotations

from .schema import FINISHED_SQL, LIVE_SQL, ident

#: The columns of a record, in :class:`~flask_memqueue.storage.postgres.records.PostgresRecord`'s order.
COLUMNS = ("id, task, args, kwargs, status, attempts, enqueued_at, eta, started_at, finished_at, result, error,"
           " traceback, owner, lane, priority, unique_key, tick, options, progress, message")
#: The columns an insert writes, in :func:`~flask_memqueue.storage.postgres.records.insert_row`'s order.
INSERT_COLUMNS = "ns, id, task, args, kwargs, status, enqueued_at, eta, lane, priority, unique_key, tick, options"
#: The state columns an outcome, a transition or a take-over writes, in
#: :func:`~flask_memqueue.storage.postgres.records.state_values`' order.
STATE_NAMES = ("status", "attempts", "eta", "started_at", "finished_at", "result", "error", "traceback",
               "owner", "progress", "message")

#: The transaction advisory lock that serialises one unique key: ``(_UNIQUE_LOCK, hashtext(key))``.
UNIQUE_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
#: A word on a channel that wakes whoever listens there (``'w:'``: look again).
WAKE = "SELECT pg_notify(%s, 'w:')"

_SET_STATE = ("status = %s, attempts = %s, eta = %s, started_at = %s, finished_at = %s, result = %s,"
              " error = %s, traceback = %s, owner = %s, progress = %s, message = %s, token = NULL")
_SET_NAMED = ", ".join(f"{c} = %(s_{c})s" for c in STATE_NAMES) + ", token = NULL"
_NAMED_STATE = ", ".join(f"%(s_{c})s" for c in STATE_NAMES)
_VALUES_ONE = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
_VALUES_MANY = ("SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::float8[], %s::float8[], %s::text[], %s::int2[], %s::text[], %s::float8[], %s::text[])")


def _insert(values: str) -> str:
    """One statement: insert the rows and notify each queue that got one (sent at commit).
    ``ON CONFLICT DO NOTHING``: an insert repeated after a lost reply adds nothing."""
    return ("WITH ins AS (INSERT INTO {jobs} (" + INSERT_COLUMNS + ") " + values
            + " ON CONFLICT (id) DO NOTHING RETURNING lane)"
            " SELECT count(*), (SELECT count(pg_notify(%s, 'q:' || l)) FROM (SELECT DISTINCT lane AS l FROM ins) d)"
            " FROM ins")


# Record an outcome of a job this owner runs (or insert it whole: eager mode), as CTEs
# ``old``, ``upd``, ``ins``, ``n`` (named parameters, see records.save_params). Nothing
# written means a late outcome: the lease lapsed (or the session ended) and another worker
# took the job over, or this very outcome was written before (a repeat after a lost reply).
_SAVE_CTES = (
    "old AS (SELECT status, owner FROM {jobs} WHERE id = %(s_id)s AND ns = %(ns)s),"
    " upd AS (UPDATE {jobs} SET " + _SET_NAMED + " WHERE id = %(s_id)s AND ns = %(ns)s AND status = 'running'"
    " AND owner = %(me)s RETURNING status, workflow),"
    " ins AS (INSERT INTO {jobs} (ns, id, task, args, kwargs, enqueued_at, lane, priority, unique_key, tick,"
    " options, " + ", ".join(STATE_NAMES) + ") SELECT %(ns)s, %(s_id)s, %(s_task)s, %(s_args)s, %(s_kwargs)s,"
    " %(s_enqueued_at)s, %(s_lane)s, %(s_priority)s, %(s_unique_key)s, %(s_tick)s, %(s_options)s, "
    + _NAMED_STATE
    + " WHERE NOT EXISTS (SELECT 1 FROM old) ON CONFLICT (id) DO NOTHING RETURNING id),"
    " n AS (SELECT pg_notify(%(dchannel)s, 'd:' || %(s_id)s) FROM upd WHERE upd.status IN "
    + FINISHED_SQL + " AND EXISTS (SELECT 1 FROM {waiters} w WHERE w.ns = %(ns)s"
    " AND w.job_id IN (%(s_id)s, '*')))"
)
# ``linked``: the job takes part in a workflow, so this outcome may have released jobs (by
# the trigger of workflow_sql.py, at the end of this statement, which its claim cannot see).
_WRITTEN = ("(SELECT count(*) FROM upd) + (SELECT count(*) FROM ins) AS written, (SELECT count(*) FROM n) AS sent,"
            " coalesce((SELECT bool_or(workflow) FROM upd), false) AS linked")

# The next due job of a queue made running, as CTEs ending in ``claimed`` (its record as it
# was before the claim). Two partial-index walks, each ``FOR UPDATE SKIP LOCKED``: the best
# due scheduled row and the best queued row; priority first, then due time (a queued row's
# is its enqueue time, its eta once requeued), the queued row on a tie.
_CLAIM_CTES = (
    "due AS (SELECT seq, priority, eta AS d, 1 AS k, status, attempts, started_at FROM {jobs}"
    " WHERE ns = %(ns)s AND lane = %(lane)s AND status = 'scheduled' AND eta <= %(now)s"
    " ORDER BY priority DESC, eta, seq LIMIT 1 FOR UPDATE SKIP LOCKED),"
    " q AS (SELECT seq, priority, COALESCE(eta, enqueued_at) AS d, 0 AS k, status, attempts, started_at"
    " FROM {jobs} WHERE ns = %(ns)s AND lane = %(lane)s AND status = 'queued'"
    " ORDER BY priority DESC, seq LIMIT 1 FOR UPDATE SKIP LOCKED),"
    " pick AS (SELECT * FROM (SELECT * FROM due UNION ALL SELECT * FROM q) x"
    " ORDER BY priority DESC, d, k LIMIT 1),"
    " claimed AS (UPDATE {jobs} j SET status = 'running', owner = %(me)s, token = %(token)s,"
    " attempts = j.attempts + 1, started_at = %(now)s FROM pick WHERE j.seq = pick.seq"
    " RETURNING j.id, j.task, j.args, j.kwargs, pick.status AS was, pick.attempts AS tries, j.enqueued_at,"
    " j.eta, pick.started_at AS began, j.finished_at, j.result, j.error, j.traceback, NULL::text AS nobody,"
    " j.lane, j.priority, j.unique_key, j.tick, j.options, j.progress, j.message)"
)


def _change(where: str, again: bool = False) -> str:
    """Overwrite one job's state if ``where`` holds; notify its queue (waiting again) or its waiters.

    ``again``: the job is queued again (a requeue): a new seq, at the end of its line, as
    it is due now."""
    return (
        "WITH upd AS (UPDATE {jobs} SET " + _SET_STATE + (", seq = DEFAULT" if again else "")
        + " WHERE id = %s AND ns = %s AND " + where
        + " RETURNING id, lane, status),"
        " n AS (SELECT CASE WHEN status IN ('queued', 'scheduled') THEN pg_notify(%s, 'q:' || lane)"
        " ELSE pg_notify(%s, 'd:' || id) END FROM upd)"
        " SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM n)"
    )


_PRUNE = ("DELETE FROM {jobs} WHERE id IN (SELECT id FROM {jobs} WHERE ns = %s AND status IN " + FINISHED_SQL
          + " {which})")

#: Name -> the statement's text, ``{jobs}`` and the other tables to be filled in.
_TEMPLATES = {
    # -- inserts
    "insert_one": _insert(_VALUES_ONE),
    "insert_many": _insert(_VALUES_MANY),
    # deferred jobs wait too (workflows): they count toward MEMQUEUE_MAXSIZE
    "count_waiting": "SELECT count(*) FROM {jobs} WHERE ns = %s AND status IN ('queued', 'scheduled', 'deferred')",
    "unique": (
        "WITH holder AS (SELECT " + COLUMNS + " FROM {jobs} WHERE ns = %s AND unique_key = %s"
        " AND status IN " + LIVE_SQL + " ORDER BY seq LIMIT 1),"
        " ins AS (INSERT INTO {jobs} (" + INSERT_COLUMNS + ")"
        " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE NOT EXISTS (SELECT 1 FROM holder) AND %s"
        " RETURNING lane),"
        " n AS (SELECT pg_notify(%s, 'q:' || lane) FROM ins)"
        " SELECT h.*, (SELECT count(*) FROM ins), (SELECT count(*) FROM n) FROM (SELECT 1) one"
        " LEFT JOIN holder h ON true"
    ),
    "claim_tick": (
        "INSERT INTO {ticks} AS t (ns, task, tick, job_id, claimed_at) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (ns, task) DO UPDATE SET tick = excluded.tick, job_id = excluded.job_id,"
        " claimed_at = excluded.claimed_at WHERE t.tick < excluded.tick RETURNING 1"
    ),
    "ticks": "SELECT task, tick, job_id, claimed_at FROM {ticks} WHERE ns = %s",
    # -- outcomes and claims
    "save": "WITH " + _SAVE_CTES + " SELECT " + _WRITTEN,
    "claim": "WITH " + _CLAIM_CTES + " SELECT * FROM claimed",
    # One statement, one round trip, one commit: the previous job's outcome and the next claim.
    "settle_claim": ("WITH " + _SAVE_CTES + ", " + _CLAIM_CTES
                     + " SELECT c.*, " + _WRITTEN + " FROM (SELECT 1) one LEFT JOIN claimed c ON true"),
    # After a lost claim reply: its jobs go back to the head of their queue.
    "unclaim": (
        "UPDATE {jobs} SET status = 'queued', owner = NULL, token = NULL, attempts = attempts - 1,"
        " started_at = NULL WHERE ns = %s AND status = 'running' AND owner = %s AND token = ANY(%s)"
    ),
    "transition": _change("status = ANY(%s)"),
    "requeue": _change("status = ANY(%s)", again=True),
    "take_over": _change("status = 'running' AND owner = %s"),
    # -- reads
    "load": "SELECT " + COLUMNS + " FROM {jobs} WHERE id = %s AND ns = %s",
    "load_many": "SELECT " + COLUMNS + " FROM {jobs} WHERE ns = %s AND id = ANY(%s)",
    "load_many_finished": "SELECT " + COLUMNS + " FROM {jobs} WHERE ns = %s AND id = ANY(%s) AND status IN "
                          + FINISHED_SQL,
    "list": (
        "SELECT " + COLUMNS + " FROM {jobs} WHERE ns = %s AND (%s::text IS NULL OR status = %s)"
        " AND (%s::text IS NULL OR lane = %s) AND (finished_at IS NULL OR finished_at > %s)"
        " ORDER BY enqueued_at DESC, seq DESC LIMIT %s OFFSET %s"
    ),
    "count": (
        "SELECT status, count(*) FROM {jobs} WHERE ns = %s AND (%s::text IS NULL OR lane = %s)"
        " AND (finished_at IS NULL OR finished_at > %s) GROUP BY status"
    ),
    "queue_counts": ("SELECT lane, status, count(*) FROM {jobs} WHERE ns = %s AND status IN " + LIVE_SQL
                     + " GROUP BY lane, status"),
    "busy": (
        "SELECT count(*) FROM {jobs} WHERE ns = %s AND (%s::text IS NULL OR lane = %s)"
        " AND (status = ANY(%s) OR (%s AND status = 'scheduled' AND eta <= %s))"
    ),
    "next_eta": ("SELECT min(eta) FROM {jobs} WHERE ns = %s AND status = 'scheduled'"
                 " AND (%s::text IS NULL OR lane = %s)"),
    # -- owners: alive while the lease runs and, if it holds a session lock taken since the
    # server's last start, while that lock is held (the server releases it when the session ends)
    "running_owners": (
        "SELECT r.owner, coalesce(o.expires_at > extract(epoch FROM clock_timestamp())"
        " AND NOT (o.lock_key IS NOT NULL AND o.locked_at > extract(epoch FROM pg_postmaster_start_time())"
        "   AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'"
        "     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "     AND l.objsubid = 1 AND l.classid::bigint = (o.lock_key >> 32)"
        "     AND l.objid::bigint = (o.lock_key & 4294967295))), false)"
        " FROM (SELECT DISTINCT owner FROM {jobs} WHERE ns = %s AND status = 'running') r"
        " LEFT JOIN {owners} o ON o.ns = %s AND o.owner = r.owner"
    ),
    "forget_old_leases": ("DELETE FROM {owners} WHERE ns = %s"
                          " AND expires_at < extract(epoch FROM clock_timestamp()) - 3600"),
    "forget_old_waiters": "DELETE FROM {waiters} WHERE ns = %s AND since < %s",
    "running_of": "SELECT " + COLUMNS + " FROM {jobs} WHERE ns = %s AND status = 'running' AND owner = %s",
    "renew": (
        "INSERT INTO {owners} AS o (ns, owner, expires_at, lock_key, locked_at)"
        " VALUES (%s, %s, extract(epoch FROM clock_timestamp()) + %s, %s,"
        " CASE WHEN %s THEN extract(epoch FROM clock_timestamp()) END)"
        " ON CONFLICT (ns, owner) DO UPDATE SET expires_at = excluded.expires_at,"
        " lock_key = CASE WHEN %s THEN excluded.lock_key ELSE o.lock_key END,"
        " locked_at = CASE WHEN %s THEN excluded.locked_at ELSE o.locked_at END"
        " RETURNING (SELECT o2.expires_at FROM "
        "{owners} o2 WHERE o2.ns = %s AND o2.owner = %s) > extract(epoch FROM clock_timestamp())"
    ),
    "forget_lease": (
        "DELETE FROM {owners} o WHERE ns = %s AND owner = %s AND NOT EXISTS"
        " (SELECT 1 FROM {jobs} j WHERE j.ns = o.ns AND j.status = 'running' AND j.owner = o.owner)"
    ),
    "progress": (
        "UPDATE {jobs} j SET progress = p.progress, message = p.message"
        " FROM unnest(%s::text[], %s::float8[], %s::text[]) AS p(id, progress, message)"
        " WHERE j.id = p.id AND j.ns = %s AND j.status = 'running' AND j.owner = %s"
    ),
    # -- retention: small DELETEs by the finished index (no table-wide lock, no scan of waiting rows)
    "prune_before": _PRUNE.replace("{which}", "AND finished_at <= %s ORDER BY finished_at LIMIT %s"),
    "prune_beyond": _PRUNE.replace("{which}", "ORDER BY finished_at DESC, seq DESC OFFSET %s LIMIT %s"),
    "purge": _PRUNE.replace("{which}", "LIMIT 5000"),
    # deferred jobs too: left behind, they would wait for ever (their parents dropped)
    "remove_waiting": ("DELETE FROM {jobs} WHERE ns = %s AND status IN ('queued', 'scheduled', 'deferred')"
                       " RETURNING seq, " + COLUMNS),
    # -- declared queues
    "undeclare": "DELETE FROM {consumers} WHERE ns = %s AND (owner = %s OR seen_at < %s)",
    "declare": ("INSERT INTO {consumers} (ns, lane, owner, seen_at) SELECT %s, l, %s, %s"
                " FROM unnest(%s::text[]) l"),
    "declared": "SELECT DISTINCT lane FROM {consumers} WHERE ns = %s AND seen_at > %s",
    # -- who waits for which job in another process (``"*"``: join())
    "want": "INSERT INTO {waiters} (ns, job_id, owner, since) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "unwant": "DELETE FROM {waiters} WHERE ns = %s AND owner = %s AND (job_id = ANY(%s) OR since < %s)",
    # -- aborts asked of running jobs (the request names the claim: the job's token)
    "forget_aborts": ("DELETE FROM {aborts} a WHERE a.ns = %s AND NOT EXISTS (SELECT 1 FROM {jobs} j"
                      " WHERE j.id = a.id AND j.status = 'running' AND j.token IS NOT DISTINCT FROM a.token)"),
    "abort": ("INSERT INTO {aborts} (ns, id, token, reason) SELECT ns, id, token, %s FROM {jobs}"
              " WHERE id = %s AND ns = %s AND status = 'running'"
              " ON CONFLICT (ns, id) DO UPDATE SET token = EXCLUDED.token, reason = EXCLUDED.reason"),
    "aborts": ("SELECT a.id, a.reason FROM {aborts} a JOIN {jobs} j ON j.id = a.id WHERE a.ns = %s"
               " AND a.id = ANY(%s) AND j.status = 'running' AND j.token IS NOT DISTINCT FROM a.token"),
}


class Statements:
    """The statements of a store whose tables are in ``schema`` (see :data:`_TEMPLATES`)."""

    insert_one: str
    insert_many: str
    count_waiting: str
    unique: str
    claim_tick: str
    ticks: str
    save: str
    claim: str
    settle_claim: str
    unclaim: str
    transition: str
    requeue: str
    take_over: str
    load: str
    load_many: str
    load_many_finished: str
    list: str
    count: str
    queue_counts: str
    busy: str
    next_eta: str
    running_owners: str
    forget_old_leases: str
    forget_old_waiters: str
    running_of: str
    renew: str
    forget_lease: str
    progress: str
    prune_before: str
    prune_beyond: str
    purge: str
    remove_waiting: str
    undeclare: str
    declare: str
    declared: str
    want: str
    unwant: str
    forget_aborts: str
    abort: str
    aborts: str

    def __init__(self, schema: str) -> None:
        tables = {name: f"{ident(schema)}.memqueue_{name}" for name in ("jobs", "owners", "consumers", "ticks",
                                                                          "waiters", "aborts")}
        for name, template in _TEMPLATES.items():
            setattr(self, name, template.format(**tables))


__all__ = ["COLUMNS", "INSERT_COLUMNS", "STATE_NAMES", "UNIQUE_LOCK", "WAKE", "Statements"]
