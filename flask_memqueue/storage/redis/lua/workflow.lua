-- Add a workflow, whole or not at all: ARGV = maxsize, n, then 7 values per job (id, status
-- ('queued', 'scheduled' or 'deferred'), eta or '', queue, priority, body, options JSON or
-- ''), nlinks, then 3 values per link (parent, child, position), ngroups, then 3 values per
-- group row (group, index, job id). Refused before any write: {'full', waiting} when the
-- app's waiting jobs and these would pass maxsize, {'missing', parent} when a parent is
-- neither among the jobs nor in the store. Otherwise {'ok', ids...}: the jobs that a parent
-- which had finished already released or cancelled here (see release). Safe to send twice:
-- ``P:wf:<first job id>`` (kept a day) marks a workflow added, and a second call only answers.
local maxsize, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local lb = 3 + n * 7
local nl = tonumber(ARGV[lb])
local gb = lb + 1 + nl * 3
local ng = tonumber(ARGV[gb])
local waits = {}
for i = 0, nl - 1 do
  local child = ARGV[lb + 2 + i * 3]
  waits[child] = (waits[child] or 0) + 1
end
-- The jobs that a parent which had finished already released or cancelled (not deferred now).
local function answer()
  local out = {'ok'}
  for i = 0, n - 1 do
    local id = ARGV[3 + i * 7]
    local h = get(id)
    if h and h.s ~= 'deferred' and waits[id] then out[#out + 1] = id end
  end
  return out
end
-- Idempotent: a call sent again after a lost reply (the same new ids) finds the mark its
-- first run left, keyed by the workflow's first job id, and writes nothing twice.
local mark = P .. ':wf:' .. (ARGV[3] or '')
if n > 0 and redis.call('EXISTS', mark) == 1 then return answer() end
if maxsize > 0 then
  local c = redis.call('HMGET', CNT, 'queued', 'scheduled', 'deferred')
  local waiting = tonumber(c[1] or 0) + tonumber(c[2] or 0) + tonumber(c[3] or 0)
  if waiting + n > maxsize then return {'full', tostring(waiting)} end
end
local mine, parents = {}, {}
for i = 0, n - 1 do mine[ARGV[3 + i * 7]] = true end
local outside = {}
for i = 0, nl - 1 do
  local parent = ARGV[lb + 1 + i * 3]
  parents[parent] = true
  if not mine[parent] and not outside[parent] then
    if redis.call('HEXISTS', J, parent) == 0 then return {'missing', parent} end
    outside[parent] = true
  end
end
if n > 0 then redis.call('SET', mark, '1', 'EX', 86400) end  -- a day: longer than any retry
for i = 0, nl - 1 do
  local b = lb + 1 + i * 3
  redis.call('RPUSH', P .. ':dn:' .. ARGV[b], ARGV[b + 2] .. ' ' .. ARGV[b + 1])
end
for child, k in pairs(waits) do redis.call('HSET', P .. ':wt', child, k) end
for i = 0, n - 1 do
  local b = 3 + i * 7
  local id, st, eta, q, p, body, op = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5],
    ARGV[b + 6]
  local seq = tostring(redis.call('INCR', P .. ':seq'))
  local h = {i = seq, s = st, q = q, p = p, n = '0'}
  if eta ~= '' then h.eta = eta end
  if op ~= '' then  -- (the options are in the body too: the state keeps what the scripts read, small)
    local o = cjson.decode(op)
    if type(o.bind) == 'string' then h.bd = o.bind end
    if type(o.group) == 'string' then h.gp = o.group end
  end
  if parents[id] then h.dp = '1' end
  if redis.call('HSETNX', J, id, text(h, coded(body))) == 1 then
    index(id, st, q, p, seq, h.eta, false, false, false)
    redis.call('SADD', QUEUES, q)
    if st ~= 'deferred' then wake(q, 1) end
  end
end
for i = 0, ng - 1 do
  local b = gb + 1 + i * 3
  redis.call('ZADD', P .. ':g:' .. ARGV[b], ARGV[b + 1], ARGV[b + 2])
end
local done = {}
for parent in pairs(outside) do
  local h, body = get(parent)
  if not h.dp then
    h.dp = '1'
    put(parent, h, body)
  end
  released(parent, h, body, done)
end
publish(done)
return answer()
