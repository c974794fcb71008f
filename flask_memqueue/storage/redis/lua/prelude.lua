-- The prelude: the helpers every script starts with (storage/redis/scripts.py puts it first).
--
-- Every change of a job is one of the scripts in this folder, atomic in Redis (store.py
-- reads as the store, these files as its data layout). scripts.py makes them one library
-- of Redis functions (Redis 7: this prelude runs once, when the library loads), or, on an
-- older server, one script each (EVALSHA: the prelude runs on every call). Every call gets
-- the store's key prefix ``P`` as its only key (``bind``) and builds every key it touches
-- from it: all of one app's keys share the ``{hash tag}`` of the prefix, so they live in
-- one slot (Redis Cluster runs every call on the one node that holds it). The layout, for
-- each app (prefix) on a server:
--
-- ========================  ====================================================================
-- ``P:j``                    hash: job id -> the job's text (below)
-- ``P:seq``                  insertion counter (``i``): FIFO order and "newest first" listings
-- ``P:qs``                   set of queue names ever used
-- ``P:p:<queue>``            zset of the priorities that have waiting jobs in ``queue``
-- ``P:q:<queue>:<prio>``     list of queued ids, newest at the head (LPUSH), claimed from the tail
-- ``P:s:<queue>:<prio>``     zset of scheduled ids by eta
-- ``P:x:<status>``           zset of ids by ``i`` for scheduled, running and the three final states
-- ``P:fin``                  zset of finished ids by finished_at (result TTL, ``MEMQUEUE_MAX_FINISHED``)
-- ``P:c``                    hash of counters: ``<status>``, and ``<status>|<queue>`` but for waiting ones
-- ``P:o`` / ``P:h:<owner>``  owners that held running jobs lately / the ids each holds
-- ``P:l:<owner>``            the owner's lease: exists while its heartbeat renews it (``PX``)
-- ``P:i:<queue>``            zset of idle consumers of ``queue`` ("<owner>|<slot>|<lease ms>"), by
--                            when their registration lapses (server time, ms)
-- ``P:w:<owner>:<slot>``     an idle consumer's own list: it blocks on it (``BLPOP``); an enqueue
--                            pushes the job it claimed for it ("<id>\n<text>"), a wake-up "w"
-- ``P:done`` (channel)       ids of jobs that just finished (space-separated), for ``Job.wait()``
--                            and ``join()`` in any process
-- ``P:dq``                   hash: owner -> [when, queues it consumes] (``declare_queues``)
-- ``P:uk`` / ``P:ticks``     unique key -> the job that took it / a periodic task's last tick
-- ``P:paused``               set of the paused queues (``pause``/``resume``; read every 0.5 s)
-- ``P:dn:<parent>``          list of "<position> <child>": the jobs waiting on parent (workflows)
-- ``P:wt``                   hash: deferred child -> how many of its parents have not yet succeeded
-- ``P:lr:<child>``           hash: parent -> "<position>\n<result JSON>", one field per used link:
--                            a chord's results, kept until its callback is released (whatever the
--                            members' retention); a field already there means the link was used
-- ``P:g:<group>``            zset of a group's member ids by member index
-- ``P:wf:<first job id>``    a workflow added (kept a day): the workflow call sent again after a lost reply only answers
-- ``P:lu`` / ``P:ll``         hash: concurrency key -> its jobs running (claimed) / its limit
-- ``P:lh:<key>``             list: queued jobs held aside for a slot of the key, oldest first
-- ``P:lq:<queue>``           zset: the held jobs of a queue by ``i`` (counted and listed as queued)
-- ``P:lt:<queue>``           zset: the jobs held for a rate window, by when that window ends
-- ``P:rw``                   hash: rate key -> "<window end> <starts in it> <limit> <period>"
-- ``P:lw``                   hash: "c|<key>" / "r|<key>" -> how many jobs are held for it
-- ``P:tn`` / ``P:tc``        hash: task name -> its code ("#1", "#2"...) / code -> name (see coded())
-- ========================  ====================================================================
--
-- A job's text is its *state*, a newline, and its *body*. The body never changes once the
-- job is inserted, and Python decodes it (the scripts read only its first lines): "\n<enqueued_at>\n<task>\n<args JSON>", then
-- "\n<kwargs JSON>" if it has keyword arguments, and "\n<kwargs JSON or nothing>\n<options
-- JSON>" if it has options without a field of their own (a trace context) (a task name with
-- a newline, or that starts with '"' or '#', is written as a JSON string). Stored, <task> is
-- the name's code ('#' and base 36, P:tn/P:tc: coded() writes it, expanded() gives every
-- text a call returns its name back) and <enqueued_at> a stamp (records.py: 8 characters,
-- exact; enqueued_at() reads it): a text written before either (the name, a float's repr)
-- reads as it is. The harness' job with a 100-character argument is 123 bytes of text
-- (jemalloc's 128-byte block) instead of 144 (160). The state is what the scripts read and change:
-- for a plain queued job (default queue, priority 0, never run) just its insertion number
-- ``i``; otherwise a JSON object of text fields: ``i``, ``s`` status ('queued' when
-- absent), ``q`` queue ('default'), ``p`` priority ('0'), ``n`` attempts ('0'), ``uk``
-- unique key, ``tk`` tick, and while they have a value ``eta``, ``sa`` started_at, ``fa``
-- finished_at, ``r`` result (JSON), ``er`` error, ``tb`` traceback, ``o`` owner, ``ct``
-- claim token, ``pf`` (claimed ahead of its start: prefetched or handed to an idle
-- consumer, not yet known to have started), ``pg``/``pm`` progress and its message, ``op``
-- the options without a field of their own (JSON text: group, bind, depends_on; records of a
-- workflow keep them in the body and ``bd`` bind and ``gp`` group here, so that a chord's
-- callback, whose depends_on lists every member, is not decoded by every member's outcome), ``dp``
-- (jobs wait on this one: its final outcome releases or cancels them, see release), ``ck``
-- the concurrency key whose slot a running job holds, ``hd`` the key a queued job is held
-- for (rate and concurrency limits, see admit).
-- Every value is text, so numbers keep their exact digits through cjson. A queued job
-- costs one hash entry and one list entry; an enqueue encodes nothing here (Python made
-- the body), and a claim decodes only the state.
local KEYS, ARGV, P, J, CNT, FIN, OWNERS, QUEUES, DONE, TN, TC, CODE, NAME
-- Every call starts here: the keys and arguments it got, the key names of its prefix.
local function bind(keys, args)
  KEYS, ARGV, P = keys, args, keys[1]
  J, CNT, FIN, OWNERS, QUEUES, DONE = P .. ':j', P .. ':c', P .. ':fin', P .. ':o', P .. ':qs', P .. ':done'
  TN, TC = P .. ':tn', P .. ':tc'
  CODE, NAME = {}, {}  -- this call's lookups of the task name table (never kept across calls)
end

-- Task names as codes. A body holds its task's code ('#' and a base-36 number) where Python
-- wrote the name: ``P:tn`` maps the name (the line as Python wrote it) to its code, ``P:tc``
-- the code back, both written by the call that inserts the first job of the task, and both
-- read only here, by the call that writes or reads the text: the table and the texts change
-- together, atomically, so a code never reads as another task's name (not even after a
-- FLUSHALL under running processes: a process keeps no code). Python never sees a code: every
-- text a call hands it goes through expanded(). A name that starts with '#' reaches here as
-- a JSON string (records.py), so a line that starts with '#' is always a code.
local B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
local function code_for(name)
  local c = CODE[name]
  if c then return c end
  c = redis.call('HGET', TN, name)
  if not c then
    local n = redis.call('HLEN', TC)
    repeat  -- the next number (HSETNX: never a code already given, whatever was deleted)
      n = n + 1
      local k, digits = n, ''
      while k > 0 do
        local d = k % 36
        digits = string.sub(B36, d + 1, d + 1) .. digits
        k = (k - d) / 36
      end
      c = '#' .. digits
    until redis.call('HSETNX', TC, c, name) == 1
    redis.call('HSET', TN, name, c)
  end
  CODE[name], NAME[c] = c, name
  return c
end

local function name_for(c)
  local name = NAME[c]
  if name == nil then
    name = redis.call('HGET', TC, c) or c  -- (no entry: only if someone deleted P:tc; Python names it)
    NAME[c] = name
  end
  return name
end

-- A new body from Python (the task's name in full) as it is stored: the name's code in its place.
local function coded(body)
  local s = string.find(body, '\n', 2, true)
  local e = string.find(body, '\n', s + 1, true)
  return string.sub(body, 1, s) .. code_for(string.sub(body, s + 1, e - 1)) .. string.sub(body, e)
end

-- A stored text (state, then body) as Python reads it: the task's name in place of its code.
-- A text written before codes (the name in full) is left as it is.
local function expanded(v)
  if not v then return v end
  local s = string.find(v, '\n', string.find(v, '\n', 1, true) + 1, true)
  if string.byte(v, s + 1) ~= 35 then return v end
  local e = string.find(v, '\n', s + 1, true)
  return string.sub(v, 1, s) .. name_for(string.sub(v, s + 1, e - 1)) .. string.sub(v, e)
end

-- enqueued_at, the body's first line, as a number: 8 characters (records.py's stamp) or a
-- float's text (a time outside 2004-2038, or a text written before stamps).
local function enqueued_at(body)
  local e = string.match(body, '^\n([^\n]*)')
  if #e == 8 and not string.find(e, '.', 1, true) then
    local m = 0
    for k = 1, 8 do
      local c = string.byte(e, k)
      if c > 46 then c = c - 1 end
      m = m * 93 + c - 33
    end
    return 1073741824 + m / 4194304
  end
  return tonumber(e) or 0
end
local FINISHED = {succeeded = true, failed = true, cancelled = true, aborted = true}
local STATE = {'s', 'n', 'eta', 'sa', 'fa', 'r', 'er', 'tb', 'o', 'pg', 'pm'}

local function qk(q, p) return P .. ':q:' .. q .. ':' .. p end
local function sk(q, p) return P .. ':s:' .. q .. ':' .. p end
local function xk(s) return P .. ':x:' .. s end
local function pk(q) return P .. ':p:' .. q end
local function hk(o) return P .. ':h:' .. o end
local function ik(q) return P .. ':i:' .. q end
local function wk(member) -- the private list of an idle consumer "<owner>|<slot>|<lease>"
  local owner, slot = string.match(member, '^(.*)|([^|]*)|[^|]*$')
  return P .. ':w:' .. owner .. ':' .. slot
end

-- A job's text -> its state (defaults filled in) and its body (from the newline on).
local function parse(v)
  local nl = string.find(v, '\n', 1, true)
  local st = string.sub(v, 1, nl - 1)
  local h
  if string.byte(st, 1) == 123 then h = cjson.decode(st) else h = {i = st} end
  h.s = h.s or 'queued'
  h.q = h.q or 'default'
  h.p = h.p or '0'
  h.n = h.n or '0'
  return h, string.sub(v, nl)
end

local function get(id)
  local v = redis.call('HGET', J, id)
  if not v then return false end
  return parse(v)
end

-- The text of state h (defaults left out) and body.
local function text(h, body)
  local s, q, p, n, i = h.s, h.q, h.p, h.n, h.i
  h.s, h.q, h.p, h.n, h.i = nil, nil, nil, nil, nil
  if s ~= 'queued' then h.s = s end
  if q ~= 'default' then h.q = q end
  if p ~= '0' then h.p = p end
  if n ~= '0' then h.n = n end
  local st = i
  if next(h) ~= nil then
    h.i = i
    st = cjson.encode(h)
  end
  h.s, h.q, h.p, h.n, h.i = s, q, p, n, i
  return st .. body
end

local function put(id, h, body) redis.call('HSET', J, id, text(h, body)) end

local function dec(v)
  if v == 'n' then return false end
  return string.sub(v, 2)
end

-- Milliseconds of the server's clock: one clock for every host's consumers.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The counters: '<status>' for every status, '<status>|<queue>' for running and finished
-- ones (a queue's waiting jobs are counted from its lists: waiting, see waiting_in).
local WAITING = {queued = true, scheduled = true}
local function count(st, q, by)
  redis.call('HINCRBY', CNT, st, by)
  if not WAITING[st] then redis.call('HINCRBY', CNT, st .. '|' .. q, by) end
end

-- How many jobs of queue q are queued and scheduled (those due by ``due`` only, if given).
local function waiting_in(q, due)
  local queued, scheduled = redis.call('ZCARD', P .. ':lq:' .. q), 0
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    queued = queued + redis.call('LLEN', qk(q, p))
    if due then
      scheduled = scheduled + redis.call('ZCOUNT', sk(q, p), '-inf', due)
    else
      scheduled = scheduled + redis.call('ZCARD', sk(q, p))
    end
  end
  return queued, scheduled
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
  elseif st == 'deferred' then
    redis.call('ZREM', xk(st), id)
  elseif st == 'running' then
    redis.call('ZREM', xk(st), id)
    if owner then redis.call('SREM', hk(owner), id) end  -- (owners.lua forgets an owner left with none)
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
  elseif st == 'deferred' then
    redis.call('ZADD', xk(st), seq, id)
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

-- The first live idle consumer of queue q, taken off the idle set (false if none).
-- Registrations lapse by themselves (a consumer that died, or stopped listening).
local function idle_pop(q)
  local k = ik(q)
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if #first == 0 then return false end
  local ms = now_ms()
  if tonumber(first[2]) < ms then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', ms - 1)
    first = redis.call('ZRANGE', k, 0, 0)
    if #first == 0 then return false end
  end
  redis.call('ZREM', k, first[1])
  return first[1]
end

-- Wake up to n idle consumers of queue q (they claim when they wake): a job they cannot be
-- handed became due or waits (a retry, a requeue, a take-over, a scheduled job).
local function wake(q, n)
  for _ = 1, n do
    local m = idle_pop(q)
    if not m then return end
    local w = wk(m)
    redis.call('RPUSH', w, 'w')
    redis.call('PEXPIRE', w, 60000)
  end
end

-- True if nothing waits in queue q that is due at ``now`` (a job enqueued now may go
-- straight to an idle consumer without overtaking one).
local function nothing_due(q, now)
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    if redis.call('LLEN', qk(q, p)) > 0 then return false end
    if #redis.call('ZRANGEBYSCORE', sk(q, p), '-inf', now, 'LIMIT', 0, 1) > 0 then return false end
  end
  return true
end

-- Rate and concurrency limits (flask_memqueue/storage/limits.py). A job's limits are in its
-- options, the sixth part of its body: limits_of decodes them only when they name a limit.
local function limits_of(body)
  local pos = 0
  for _ = 1, 5 do
    pos = string.find(body, '\n', pos + 1, true)
    if not pos then return false end
  end
  local opts = string.sub(body, pos + 1)
  if not string.find(opts, '"concurrency":', 1, true) and not string.find(opts, '"rate_limit":', 1, true) then
    return false
  end
  return cjson.decode(opts)
end

-- Hold queued job id (state h, body, status queued) aside: the slots of key k are all taken
-- (due false), or its rate window is full until due (when it goes back to its queue).
local function hold(id, h, body, k, due)
  h.hd = k
  put(id, h, body)
  redis.call('ZADD', P .. ':lq:' .. h.q, h.i, id)
  if due then
    redis.call('ZADD', P .. ':lt:' .. h.q, due, id)
    redis.call('HINCRBY', P .. ':lw', 'r|' .. k, 1)
  else
    redis.call('RPUSH', P .. ':lh:' .. k, id)
    redis.call('HINCRBY', P .. ':lw', 'c|' .. k, 1)
  end
end

-- Take a held job out of the held indexes (a cancel, or its release).
local function unhold_index(id, h)
  local k = h.hd
  redis.call('ZREM', P .. ':lq:' .. h.q, id)
  local kind = 'c|'
  if redis.call('ZREM', P .. ':lt:' .. h.q, id) == 1 then kind = 'r|' else redis.call('LREM', P .. ':lh:' .. k, 1, id) end
  if redis.call('HINCRBY', P .. ':lw', kind .. k, -1) <= 0 then redis.call('HDEL', P .. ':lw', kind .. k) end
  h.hd = nil
end

-- A held job goes back to the claiming end of its queue.
local function unhold(id, h, body)
  unhold_index(id, h)
  put(id, h, body)
  redis.call('RPUSH', qk(h.q, h.p), id)
  redis.call('ZADD', pk(h.q), h.p, h.p)
end

-- Job (state h) leaves running: its slot is free, and the first job held for it goes back.
local function free_slot(h)
  local k = h.ck
  if not k then return end
  h.ck = nil
  if redis.call('HINCRBY', P .. ':lu', k, -1) <= 0 then redis.call('HDEL', P .. ':lu', k) end
  local id = redis.call('LINDEX', P .. ':lh:' .. k, 0)
  if id then
    local g, gbody = get(id)
    if g and g.s == 'queued' and g.hd == k then
      unhold(id, g, gbody)
      wake(g.q, 1)
    else
      redis.call('LPOP', P .. ':lh:' .. k)  -- (never left behind: a cancel takes it out)
    end
  end
end

-- Jobs of queue q held for a rate window that has ended go back to its queue (oldest claimed first).
local function rate_due(q, now)
  local ids = redis.call('ZRANGEBYSCORE', P .. ':lt:' .. q, '-inf', now)
  if #ids == 0 then return end
  local back = {}
  for _, id in ipairs(ids) do
    local g, gbody = get(id)
    if g then back[#back + 1] = {tonumber(g.i), id, g, gbody} end
  end
  table.sort(back, function(x, y) return x[1] > y[1] end)
  for _, b in ipairs(back) do unhold(b[2], b[3], b[4]) end
end

-- Whether job id (state h, body), about to be claimed, may start: its start counted (and the
-- slot it takes marked in h.ck), true; else it is held aside (status queued) and false.
local function admit(id, h, body)
  local o = limits_of(body)
  if not o then return true end
  if h.s == 'scheduled' then  -- a due job waits as a queued one
    count('scheduled', h.q, -1)
    count('queued', h.q, 1)
    h.s, h.eta = 'queued', nil
  end
  local ck, c = o.concurrency_key, o.concurrency
  if c and ck then
    redis.call('HSET', P .. ':ll', ck, c)
    if tonumber(redis.call('HGET', P .. ':lu', ck) or '0') >= c then
      hold(id, h, body, ck, false)
      return false
    end
  end
  local rk, r = o.rate_key, o.rate_limit
  if r and rk then
    local period = tonumber(o.rate_period or 1)
    local wend = math.floor(now_ms() / 1000 / period) * period + period
    local n = 0
    local w = redis.call('HGET', P .. ':rw', rk)
    if w then
      local e, m = string.match(w, '^(%S+) (%S+)')
      if tonumber(e) == wend then n = tonumber(m) end
    end
    if n >= r then
      hold(id, h, body, rk, wend)
      return false
    end
    redis.call('HSET', P .. ':rw', rk, string.format('%.17g %d %d %.17g', wend, n + 1, r, period))
  end
  if c and ck then
    redis.call('HINCRBY', P .. ':lu', ck, 1)
    h.ck = ck
  end
  return true
end

-- Claim job id (state h, body) for owner: running, one more attempt, started at now.
local function claim_one(id, h, body, owner, now, token, ahead)
  local q, p = h.q, h.p
  h.s, h.n, h.sa, h.o, h.ct, h.eta = 'running', tostring(tonumber(h.n) + 1), now, owner, token, nil
  if ahead then h.pf = '1' else h.pf = nil end
  put(id, h, body)
  index(id, 'running', q, p, h.i, false, false, owner, false)
end

-- Hand a just-queued job (id, state h, body; raw: its body from Python; indexed nowhere yet) to an idle consumer of
-- its queue if one listens and nothing else is due there: claimed for it here, pushed to
-- its list with the text it had before the claim. True if handed.
local function hand_off(id, h, body, raw, now)
  local m = idle_pop(h.q)
  if not m then return false end
  local owner, _, lease = string.match(m, '^(.*)|([^|]*)|([^|]*)$')
  local before = text(h, raw)  -- (the consumer reads it as it comes: the task's name in full)
  -- (its lease: set by the claim that registered it, a moment ago)
  claim_one(id, h, body, owner, now, 'h', true)
  local w = wk(m)
  redis.call('RPUSH', w, id .. '\n' .. before)
  redis.call('PEXPIRE', w, math.max(60000, 2 * tonumber(lease)))
  return true
end

-- Insert a new job: id, status, eta ('' none), queue, priority, body, the client's clock,
-- unique key and tick (false: none). A queued job goes straight to an idle consumer when
-- one waits and nothing is due before it. Returns its state, or false if the store holds
-- the id already (a call repeated after a lost reply).
local function add(id, st, eta, q, p, raw, now, uk, tk)
  local body = coded(raw)
  local seq = tostring(redis.call('INCR', P .. ':seq'))
  local h = {i = seq, s = st, q = q, p = p, n = '0', uk = uk or nil, tk = tk or nil}
  if eta ~= '' then h.eta = eta end
  local limited = st == 'queued' and limits_of(body)
  if st == 'queued' and not limited and redis.call('ZCARD', ik(q)) > 0 and nothing_due(q, now) then
    if redis.call('HEXISTS', J, id) == 1 then return false end
    if hand_off(id, h, body, raw, now) then return h end
  end
  local v
  if st == 'queued' and q == 'default' and p == '0' and not uk and not tk then
    v = seq .. body  -- a plain queued job: its insertion number is its whole state
  else
    v = text(h, body)
  end
  if redis.call('HSETNX', J, id, v) == 0 then return false end
  if st ~= 'queued' then
    index(id, st, q, p, seq, h.eta, false, false, false)
    redis.call('SADD', QUEUES, q)
    if st == 'scheduled' then wake(q, 1) end
    return h
  end
  if redis.call('LPUSH', qk(q, p), id) == 1 then
    redis.call('ZADD', pk(q), p, p)
    redis.call('SADD', QUEUES, q)
  end
  count(st, q, 1)
  if limited then wake(q, 1) end  -- never handed over: a claim checks its limit
  return h
end

-- Counter changes summed over a call, written once: acc[<status>] and acc[<status>|<queue>].
local function bump(acc, st, q, by)
  acc[st] = (acc[st] or 0) + by
  if not WAITING[st] then
    local k = st .. '|' .. q
    acc[k] = (acc[k] or 0) + by
  end
end
local function write_counts(acc)
  for k, v in pairs(acc) do
    if v ~= 0 then redis.call('HINCRBY', CNT, k, v) end
  end
end

-- ZADD/SADD/HSET ... with many members at once (chunks, for Lua's stack).
local function many(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(#items, i + 999)))
  end
end

-- Overwrite the state fields of h with those of the JSON object js; returns h.
local function write_state(h, js)
  local new = cjson.decode(js)
  for _, f in ipairs(STATE) do h[f] = new[f] end
  h.s = h.s or 'queued'
  h.n = h.n or '0'
  if h.s ~= 'running' then h.ct = nil end
  h.pf = nil
  return h
end

-- Workflows. The task name in a job's body.
local function task_of(body)
  local t = string.match(body, '^\n[^\n]*\n([^\n]*)')
  if string.byte(t, 1) == 35 then t = name_for(t) end
  if string.byte(t, 1) == 34 then t = cjson.decode(t) end
  return t
end

-- A released job's JSON arguments: bound (a result, or a JSON list of results) first,
-- then its own (as base.released_args does in Python).
local function bound_args(args, bound)
  local inner = string.match(args, '^%s*%[(.*)%]%s*$')
  inner = string.match(inner, '^%s*(.-)%s*$')
  if inner == '' then return '[' .. bound .. ']' end
  return '[' .. bound .. ',' .. inner .. ']'
end

-- Job pid (task ptask) reached final status pst (result pr, error per): release its
-- children whose last parent it was (results bound into their arguments here, in this
-- same atomic call), or cancel them and, transitively, theirs. Each link is used once
-- (its field in P:lr:<child>). A cancelled dependent finishes at fa, as its parent. Appends the ids cancelled to done (published by the caller).
local function release(pid, ptask, pst, pr, per, fa, done)
  local stack = {{pid, ptask, pst, pr, per, false}}
  while #stack > 0 do
    local top = table.remove(stack)
    local id, task, st, r, er, why = top[1], top[2], top[3], top[4], top[5], top[6]
    local edges = redis.call('LRANGE', P .. ':dn:' .. id, 0, -1)
    for _, e in ipairs(edges) do
      local pos, child = string.match(e, '^(%-?%d+) (.*)$')
      -- A child has its counter in P:wt while (and only while) it is deferred: its record,
      -- which may be large (a chord's callback lists every member in depends_on), is read
      -- only by the outcome that releases or cancels it, not by every member's.
      if redis.call('HEXISTS', P .. ':wt', child) == 1
          and redis.call('HSETNX', P .. ':lr:' .. child, id, pos .. '\n' .. (r or 'null')) == 1
          and (st ~= 'succeeded' or redis.call('HINCRBY', P .. ':wt', child, -1) <= 0) then
        local ch, cbody = get(child)
        if ch and ch.s == 'deferred' then
          local q, p = ch.q, ch.p
          if st == 'succeeded' then
            local bind = ch.bd or false
            if not bind and ch.op then bind = cjson.decode(ch.op).bind end  -- a record written before bd
            if bind == 'first' or bind == 'list' then
              local bound = r or 'null'
              if bind == 'list' then
                local rows = {}
                for _, v in ipairs(redis.call('HVALS', P .. ':lr:' .. child)) do
                  local at, res = string.match(v, '^(%-?%d+)\n(.*)$')
                  if tonumber(at) >= 0 then rows[#rows + 1] = {tonumber(at), res} end
                end
                table.sort(rows, function(x, y) return x[1] < y[1] end)
                local parts = {}
                for i, row in ipairs(rows) do parts[i] = row[2] end
                bound = '[' .. table.concat(parts, ',') .. ']'
              elseif pos ~= '0' then
                -- the last parent is an extra depends_on, not the chain's link: bind the link's result
                for _, v in ipairs(redis.call('HVALS', P .. ':lr:' .. child)) do
                  local at, res = string.match(v, '^(%-?%d+)\n(.*)$')
                  if at == '0' then bound = res end
                end
              end
              local head, args, tail = string.match(cbody, '^(\n[^\n]*\n[^\n]*\n)([^\n]*)(.*)$')
              cbody = head .. bound_args(args, bound) .. tail
            end
            unindex(child, 'deferred', q, p, false, false)
            ch.s = 'queued'
            ch.i = tostring(redis.call('INCR', P .. ':seq'))
            put(child, ch, cbody)
            index(child, 'queued', q, p, ch.i, false, false, false, false)
            redis.call('SADD', QUEUES, q)
            redis.call('HDEL', P .. ':wt', child)
            redis.call('DEL', P .. ':lr:' .. child)
            wake(q, 1)
          else
            local reason = why
            if not reason then
              if st == 'cancelled' then
                reason = 'dependency ' .. id .. ' (' .. task .. ') was cancelled'
              else
                reason = 'dependency ' .. id .. ' (' .. task .. ') failed: ' .. (er or 'None')
              end
            end
            unindex(child, 'deferred', q, p, false, false)
            ch.s, ch.fa, ch.er = 'cancelled', fa, reason
            put(child, ch, cbody)
            index(child, 'cancelled', q, p, ch.i, false, ch.fa, false, false)
            redis.call('HDEL', P .. ':wt', child)
            redis.call('DEL', P .. ':lr:' .. child)
            done[#done + 1] = child
            if ch.dp then stack[#stack + 1] = {child, task_of(cbody), 'cancelled', false, reason, reason} end
          end
        end
      end
    end
  end
end

-- After job id (state h, body) reached a final state: release what waits on it, if anything does.
local function released(id, h, body, done)
  if h.dp and FINISHED[h.s] then release(id, task_of(body), h.s, h.r, h.er, h.fa or tostring(now_ms() / 1000), done) end
end

-- Record the outcome of a job owner ran, from 5 ARGV values at b: id, state (JSON),
-- body ('' unless the store may not have it), queue, priority. Inserted whole if the
-- store never had it (eager mode). Returns false when written, or the stored status when
-- it is a late outcome (the job is no longer this owner's: its lease lapsed, another took
-- it). ``done`` collects the ids that finished (published by the caller, once).
local function settle(owner, b, done)
  local id = ARGV[b]
  local h, body = get(id)
  if not h then
    body = ARGV[b + 2]
    if body == '' then return 'gone' end
    body = coded(body)
    local seq = tostring(redis.call('INCR', P .. ':seq'))
    local q, p = ARGV[b + 3], ARGV[b + 4]
    h = write_state({i = seq, q = q, p = p}, ARGV[b + 1])
    local new = cjson.decode(ARGV[b + 1])
    h.uk, h.tk = new.uk, new.tk
    put(id, h, body)
    redis.call('SADD', QUEUES, q)
    index(id, h.s, q, p, seq, h.eta, h.fa, h.o, false)
    if FINISHED[h.s] then done[#done + 1] = id end
    released(id, h, body, done)
    return false
  end
  if h.s ~= 'running' or h.o ~= owner then
    -- the very outcome written before (a write repeated after its reply was lost) is no late one
    local new = cjson.decode(ARGV[b + 1])
    if h.s == (new.s or 'queued') and h.n == (new.n or '0') and h.sa == new.sa and h.fa == new.fa
        and h.eta == new.eta then
      return false
    end
    return h.s
  end
  local q, p, seq = h.q, h.p, h.i
  unindex(id, 'running', q, p, owner, false)
  free_slot(h)
  write_state(h, ARGV[b + 1])
  put(id, h, body)
  index(id, h.s, q, p, seq, h.eta, h.fa, h.o, false)
  if FINISHED[h.s] then done[#done + 1] = id end
  released(id, h, body, done)
  if h.s == 'scheduled' then wake(q, 1) end
  return false
end

-- Record the outcomes of n jobs owner ran (5 ARGV values each from b, as settle): the
-- common case (each still running for owner) in a few commands for them all, the others
-- one by one. Appends late outcomes to discarded ({id, stored status, ...}).
local function settle_many(owner, b, n, done, discarded)
  if n == 0 then return end
  local ids = {}
  for i = 1, n do ids[i] = ARGV[b + (i - 1) * 5] end
  local vals = redis.call('HMGET', J, unpack(ids))
  local acc, hs, freed, zs, fin = {}, {}, {}, {}, {}
  for i, id in ipairs(ids) do
    local base = b + (i - 1) * 5
    local v = vals[i]
    local h, body
    if v then h, body = parse(v) end
    if not h or h.s ~= 'running' or h.o ~= owner then
      local st = settle(owner, base, done)  -- inserted whole (eager mode), gone, or a late outcome
      if st then
        discarded[#discarded + 1] = id
        discarded[#discarded + 1] = st
      end
    else
      local q, p = h.q, h.p
      bump(acc, 'running', q, -1)
      freed[#freed + 1] = id
      free_slot(h)
      write_state(h, ARGV[base + 1])
      hs[#hs + 1] = id
      hs[#hs + 1] = text(h, body)
      local st = h.s
      if FINISHED[st] then
        bump(acc, st, q, 1)
        zs[st] = zs[st] or {}
        local z = zs[st]
        z[#z + 1] = h.i
        z[#z + 1] = id
        fin[#fin + 1] = h.fa
        fin[#fin + 1] = id
        done[#done + 1] = id
        if h.dp then released(id, h, body, done) end
      else
        index(id, st, q, p, h.i, h.eta, h.fa, h.o, false)
        if st == 'scheduled' or st == 'queued' then wake(q, 1) end
      end
    end
  end
  if #freed > 0 then
    many('ZREM', xk('running'), freed)
    many('SREM', hk(owner), freed)
  end
  if #hs > 0 then many('HSET', J, hs) end
  for st, z in pairs(zs) do many('ZADD', xk(st), z) end
  if #fin > 0 then many('ZADD', FIN, fin) end
  write_counts(acc)
end

local function publish(done)
  if #done > 0 then redis.call('PUBLISH', DONE, table.concat(done, ' ')) end
end

-- Cancel or requeue one job (transition.lua, and per job transition_many.lua): if its status
-- is one of `from` (comma-separated), write `state` (JSON). Returns false if it was not, else
-- true and its queue if it now waits there (for a wake-up); a finished job's id is added to
-- `done` (to publish) and its dependents released or cancelled.
local function transition_one(id, from, state, done)
  local h, body = get(id)
  if not h or not string.find(',' .. from .. ',', ',' .. h.s .. ',', 1, true) then return false end
  local q, p = h.q, h.p
  if h.hd then unhold_index(id, h) end  -- held for a limit: out of the held indexes
  unindex(id, h.s, q, p, h.o, false)
  if h.s == 'deferred' then  -- its links are of no use any more
    redis.call('HDEL', P .. ':wt', id)
    redis.call('DEL', P .. ':lr:' .. id)
  end
  write_state(h, state)
  if h.s == 'queued' then
    h.i = tostring(redis.call('INCR', P .. ':seq'))  -- queued again: a new place, at the end of the line
  end
  put(id, h, body)
  index(id, h.s, q, p, h.i, h.eta, h.fa, h.o, false)
  if FINISHED[h.s] then
    done[#done + 1] = id
    released(id, h, body, done)
  end
  return true, (h.s == 'queued' or h.s == 'scheduled') and q or nil
end

-- Put a job claimed ahead back at the claiming end of its queue, its attempt not counted.
local function put_back(id, h, body, owner)
  unindex(id, 'running', h.q, h.p, owner, false)
  free_slot(h)
  h.s, h.n, h.o, h.sa, h.ct, h.pf = 'queued', tostring(math.max(0, tonumber(h.n) - 1)), nil, nil, nil, nil
  put(id, h, body)
  index(id, 'queued', h.q, h.p, h.i, false, false, false, true)
  wake(h.q, 1)
end

-- Delete a finished (or any) job and its index entries (and its unique key's entry).
local function forget(id)
  local h, body = get(id)
  if h then
    unindex(id, h.s, h.q, h.p, h.o, false)
    if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
    local grp = h.gp
    if not grp and h.op then grp = cjson.decode(h.op).group end  -- a record written before gp
    if type(grp) == 'string' then redis.call('ZREM', P .. ':g:' .. grp, id) end
    if h.dp then redis.call('DEL', P .. ':dn:' .. id) end
  else
    redis.call('ZREM', FIN, id)
  end
  redis.call('HDEL', J, id)
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

-- A record for Python: {id, its text}.
local function rec(id)
  return {id, expanded(redis.call('HGET', J, id))}
end
