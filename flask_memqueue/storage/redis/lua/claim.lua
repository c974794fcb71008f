-- Record finished jobs and claim the next due one of a queue, in one step.
-- ARGV = owner, now, lease ms, claim token, queue, stop (1/0), repeated (1/0),
-- nfailed, the tokens of earlier claims whose reply never came, nsettle, then 18
-- values per job to record (see settle). Returns {discarded, id, record before the
-- claim}: discarded = {id, stored status, ...} of late outcomes not recorded.
local owner, now, lease, token, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stop, repeated = ARGV[6] == '1', ARGV[7] == '1'
local nf = tonumber(ARGV[8])
local b = 9
if nf > 0 then
  -- Jobs claimed by a call whose reply never came never ran: they go back to the
  -- claiming end of their queue, their attempt not counted.
  local failed = {}
  for i = 0, nf - 1 do failed[ARGV[b + i]] = true end
  for _, id in ipairs(redis.call('SMEMBERS', hk(owner))) do
    local h = get(id)
    if h and h.ct and failed[h.ct] then
      unindex(id, 'running', h.q, h.p, owner, false)
      h.s, h.n, h.o, h.sa, h.ct = 'queued', tostring(math.max(0, tonumber(h.n) - 1)), nil, nil, nil
      put(id, h)
      index(id, 'queued', h.q, h.p, h.i, false, false, false, true)
      wake(h.q, 1)
    end
  end
  b = b + nf
end
local ns = tonumber(ARGV[b])
b = b + 1
local discarded = {}
for _ = 1, ns do
  local st = settle(owner, b)
  if st then
    discarded[#discarded + 1] = ARGV[b]
    discarded[#discarded + 1] = st
  end
  b = b + 18
end
if stop then return {discarded} end
redis.call('SET', P .. ':l:' .. owner, now, 'PX', lease)
if repeated then
  -- this call was sent before and its reply lost: the job it claimed then is the answer
  for _, id in ipairs(redis.call('SMEMBERS', hk(owner))) do
    local h = get(id)
    if h and h.ct == token then
      h.n, h.s, h.o, h.sa, h.ct = tostring(tonumber(h.n) - 1), 'queued', nil, nil, nil
      return {discarded, id, {id, cjson.encode(h)}}
    end
  end
end
local prios = redis.call('ZREVRANGE', pk(queue), 0, -1)
for _, p in ipairs(prios) do
  while true do
    local id, popped = false, false
    local due = redis.call('ZRANGEBYSCORE', sk(queue, p), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 2)
    if #due > 0 then
      -- due time decides within a priority: the queued job at the head of the line goes first
      -- if it was enqueued (requeued: its eta) no later than the due job's eta
      local head = redis.call('LINDEX', qk(queue, p), -1)
      if head then
        local hh = get(head)
        if not hh or tonumber(hh.eta or hh.e or '0') <= tonumber(due[2]) then due = {} end
      end
    end
    if #due > 0 then
      id = due[1]
      if #due > 2 and due[4] == due[2] then
        -- equal etas: the first inserted goes first
        local best = false
        for _, t in ipairs(redis.call('ZRANGEBYSCORE', sk(queue, p), due[2], due[2])) do
          local s = tonumber(get(t).i)
          if not best or s < best then best, id = s, t end
        end
      end
    else
      id = redis.call('RPOP', qk(queue, p))
      popped = true
    end
    if not id then break end
    local r = rec(id)
    if r[2] then
      local h = cjson.decode(r[2])
      unindex(id, h.s, queue, p, false, popped)
      h.s, h.n, h.sa, h.o, h.ct, h.eta = 'running', tostring(tonumber(h.n or '0') + 1), now, owner, token, nil
      put(id, h)
      index(id, 'running', queue, p, h.i, false, false, owner, false)
      return {discarded, id, r}
    end
    if not popped then redis.call('ZREM', sk(queue, p), id) end
  end
  tidy(queue, p)
end
-- nothing due: the tokens left are stale (an enqueue after this script adds a new one)
redis.call('DEL', rk(queue))
return {discarded}
