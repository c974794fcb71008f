-- The prelude: the helpers every script starts with (storage/redis/scripts.py puts it first).
--
-- Every change of a job is one of the scripts in this folder, atomic in Redis (store.py
-- reads as the store, these files as its data layout). Every script gets the store's
-- key prefix ``P`` as ``KEYS[1]`` and builds its key names from it (all of one
-- app's keys share a ``{hash tag}`` in the default prefix, so they live in one
-- slot). The layout, for each app (prefix) on a server:
--
-- ========================  ====================================================================
-- ``P:j:<id>``               the job: a string, a JSON object of short text fields (below)
-- ``P:seq``                  insertion counter (``i``): FIFO order and "newest first" listings
-- ``P:qs``                   set of queue names ever used
-- ``P:p:<queue>``            zset of the priorities that have waiting jobs in ``queue``
-- ``P:q:<queue>:<prio>``     list of queued ids, newest at the head (LPUSH), claimed from the tail
-- ``P:s:<queue>:<prio>``     zset of scheduled ids by eta
-- ``P:x:<status>``           zset of ids by ``i`` for scheduled, running and the three final states
-- ``P:fin``                  zset of finished ids by finished_at (result TTL, ``MEMQUEUE_MAX_FINISHED``)
-- ``P:c``                    hash of counters: ``<status>`` and ``<status>|<queue>``
-- ``P:o`` / ``P:h:<owner>``  owners holding running jobs / the ids each holds
-- ``P:l:<owner>``            the owner's lease: exists while its heartbeat renews it (``PX``)
-- ``P:r:<queue>``            wake-up tokens: an idle consumer blocks on it (``BLPOP``)
-- ``P:w:<owner>``            a private wake-up list (``wake()`` ends this owner's ``BLPOP``)
-- ``P:done`` (channel)       ids of jobs that just finished, for ``Job.wait()`` in any process
-- ``P:dq``                   hash: owner -> [when, queues it consumes] (``declare_queues``)
-- ========================  ====================================================================
--
-- Job fields: ``t`` task, ``a`` args (JSON), ``k`` kwargs (JSON, absent for
-- none), ``s`` status, ``n`` attempts, ``e`` enqueued_at, ``i`` insertion number,
-- ``q`` queue, ``p`` priority, and while they have a value ``eta``, ``sa``
-- started_at, ``fa`` finished_at, ``r`` result (JSON), ``er`` error, ``tb``
-- traceback, ``o`` owner, ``ct`` claim token, ``pg``/``pm`` progress and its
-- message. A queued job costs one string and one list entry, nothing more (one string, not a
-- hash: Redis keeps a hash with a value over 64 bytes as a table, and arguments often are; a
-- string of the same fields costs less than half of that). Every value is text, so numbers
-- keep their exact digits through cjson.
--
-- State values travel as ARGV strings tagged by their first character: ``n``
-- is "no value" (the field is deleted), ``v<text>`` a value.
local P = KEYS[1]
local CNT = P .. ':c'
local FIN = P .. ':fin'
local OWNERS = P .. ':o'
local QUEUES = P .. ':qs'
local DONE = P .. ':done'
local FINISHED = {succeeded = true, failed = true, cancelled = true}
local STATE = {'s', 'n', 'eta', 'sa', 'fa', 'r', 'er', 'tb', 'o', 'pg', 'pm'}

local function jk(id) return P .. ':j:' .. id end
-- A job is one string: a JSON object of text fields (see the field names above).
local function get(id)
  local v = redis.call('GET', jk(id))
  if not v then return false end
  return cjson.decode(v)
end
local function put(id, h) redis.call('SET', jk(id), cjson.encode(h)) end
local function qk(q, p) return P .. ':q:' .. q .. ':' .. p end
local function sk(q, p) return P .. ':s:' .. q .. ':' .. p end
local function xk(s) return P .. ':x:' .. s end
local function pk(q) return P .. ':p:' .. q end
local function hk(o) return P .. ':h:' .. o end
local function rk(q) return P .. ':r:' .. q end

local function dec(v)
  if v == 'n' then return false end
  return string.sub(v, 2)
end

local function count(st, q, by)
  redis.call('HINCRBY', CNT, st, by)
  redis.call('HINCRBY', CNT, st .. '|' .. q, by)
end

-- Forget a priority level of queue q once nothing waits in it.
local function tidy(q, p)
  if redis.call('LLEN', qk(q, p)) == 0 and redis.call('ZCARD', sk(q, p)) == 0 then
    redis.call('ZREM', pk(q), p)
  end
end

-- Take id out of the indexes of its status st (popped: already popped from its list).
local function unindex(id, st, q, p, owner, popped)
  if st == 'queued' then
    if not popped then redis.call('LREM', qk(q, p), 1, id) end
    tidy(q, p)
  elseif st == 'scheduled' then
    redis.call('ZREM', sk(q, p), id)
    redis.call('ZREM', xk(st), id)
    tidy(q, p)
  elseif st == 'running' then
    redis.call('ZREM', xk(st), id)
    if owner then
      local h = hk(owner)
      redis.call('SREM', h, id)
      if redis.call('SCARD', h) == 0 then redis.call('SREM', OWNERS, owner) end
    end
  else
    redis.call('ZREM', xk(st), id)
    redis.call('ZREM', FIN, id)
  end
  count(st, q, -1)
end

-- Put id into the indexes of status st (front: at the claiming end of its list).
local function index(id, st, q, p, seq, eta, fa, owner, front)
  if st == 'queued' then
    if front then redis.call('RPUSH', qk(q, p), id) else redis.call('LPUSH', qk(q, p), id) end
    redis.call('ZADD', pk(q), p, p)
  elseif st == 'scheduled' then
    redis.call('ZADD', sk(q, p), eta, id)
    redis.call('ZADD', xk(st), seq, id)
    redis.call('ZADD', pk(q), p, p)
  elseif st == 'running' then
    redis.call('ZADD', xk(st), seq, id)
    redis.call('SADD', hk(owner), id)
    redis.call('SADD', OWNERS, owner)
  else
    redis.call('ZADD', xk(st), seq, id)
    redis.call('ZADD', FIN, fa, id)
  end
  count(st, q, 1)
end

-- An idle consumer of queue q blocks on its token list: one token per job, a few at most.
local function wake(q, n)
  local k = rk(q)
  for _ = 1, math.min(n, 16) do redis.call('LPUSH', k, '1') end
  redis.call('LTRIM', k, 0, 15)
end

-- Overwrite the state fields of job h with the 11 tagged values from ARGV[b]; returns h.
local function write_state(h, b)
  for i, f in ipairs(STATE) do
    local x = dec(ARGV[b + i - 1])
    if x then h[f] = x else h[f] = nil end
  end
  if h.s ~= 'running' then h.ct = nil end
  return h
end

-- A record for Python: {id, its JSON text}.
local function rec(id)
  return {id, redis.call('GET', jk(id))}
end

-- Record the outcome of a job owner ran, from the 18 ARGV values at b: id, task, args,
-- kwargs, enqueued_at, queue, priority, then the state. Inserted whole if the store
-- never had it (eager mode). Returns false when written, or the stored status when it is
-- a late outcome (the job is no longer this owner's: its lease lapsed, another took it).
local function settle(owner, b)
  local id = ARGV[b]
  local h = get(id)
  if not h then
    local seq = tostring(redis.call('INCR', P .. ':seq'))
    local q, p = ARGV[b + 5], ARGV[b + 6]
    h = {t = ARGV[b + 1], a = ARGV[b + 2], e = ARGV[b + 4], i = seq, q = q, p = p}
    local kw = dec(ARGV[b + 3])
    if kw then h.k = kw end
    local v = write_state(h, b + 7)
    put(id, v)
    redis.call('SADD', QUEUES, q)
    index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
    if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
    return false
  end
  if h.s ~= 'running' or h.o ~= owner then
    -- the very outcome written before (a write repeated after its reply was lost) is no late one
    if h.s == dec(ARGV[b + 7]) and (h.n or false) == dec(ARGV[b + 8]) and (h.sa or false) == dec(ARGV[b + 10])
        and (h.fa or false) == dec(ARGV[b + 11]) and (h.eta or false) == dec(ARGV[b + 9]) then
      return false
    end
    return h.s
  end
  local q, p, seq = h.q, h.p, h.i
  unindex(id, 'running', q, p, owner, false)
  local v = write_state(h, b + 7)
  put(id, v)
  index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
  if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
  if v.s == 'scheduled' then wake(q, 1) end
  return false
end

-- Delete a finished (or any) job and its index entries (and its unique key's entry).
local function forget(id)
  local h = get(id)
  if h then
    unindex(id, h.s, h.q, h.p, h.o, false)
    if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
  else
    redis.call('ZREM', FIN, id)
  end
  redis.call('DEL', jk(id))
end

-- Delete the jobs that finished at or before t (the result TTL).
local function prune_before(t)
  local ids = redis.call('ZRANGEBYSCORE', FIN, '-inf', t)
  for _, id in ipairs(ids) do forget(id) end
  return #ids
end

local function queues(q)
  if q ~= '' then return {q} end
  return redis.call('SMEMBERS', QUEUES)
end
