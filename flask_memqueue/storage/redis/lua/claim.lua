-- Record finished jobs and claim the next due ones of a queue, in one step.
-- ARGV = owner, now, lease ms, claim token, queue, stop (1/0), repeated (1/0), nfailed,
-- the tokens of earlier claims whose reply never came, nsettle, 5 values per job to record
-- (see settle), then (optional) limit (default 1), the consumer's slot ('' none), flags ('r':
-- if nothing is claimed, this consumer listens on its own list from now on; 'd': it did
-- listen, so jobs may have been handed to it, and wake-ups pushed), how
-- long that registration lasts (ms), until when the consumer blocks on its list right
-- after this call ('' if it does not: a caller that sends its BLPOP with this call), nrelease,
-- the ids of jobs it claimed ahead and gives back. Returns {discarded, {id, text before
-- the claim, ...}, the queue's next eta or false}: discarded = {id, stored status, ...} of
-- late outcomes not recorded.
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
    local h, body = get(id)
    if h and h.ct and failed[h.ct] then put_back(id, h, body, owner) end
  end
  b = b + nf
end
local discarded, done = {}, {}
local ns = tonumber(ARGV[b])
settle_many(owner, b + 1, ns, done, discarded)
publish(done)
b = b + 1 + ns * 5
local limit = tonumber(ARGV[b] or '1')
local slot = ARGV[b + 1] or ''
-- flags: 'r' register if nothing is claimed, 'd' drain the slot's list (it was registered)
local register = string.find(ARGV[b + 2] or '', 'r', 1, true) ~= nil
local drain = string.find(ARGV[b + 2] or '', 'd', 1, true) ~= nil
local ttl = tonumber(ARGV[b + 3] or '2000')
local blocks_until = ARGV[b + 4] or ''
local nr = tonumber(ARGV[b + 5] or '0')
local out = {}
-- Given back (a consumer that stops): the last first, so the first is claimed first again.
for i = b + 5 + nr, b + 6, -1 do
  local id = ARGV[i]
  local h, body = get(id)
  if h and h.s == 'running' and h.o == owner then put_back(id, h, body, owner) end
end
local member = owner .. '|' .. slot .. '|' .. lease
local woken = false
if slot ~= '' and drain then
  -- Listening no longer; jobs enqueuers handed to this consumer meanwhile are its claims.
  redis.call('ZREM', ik(queue), member)
  local w = wk(member)
  local handed = redis.call('LRANGE', w, 0, -1)
  if #handed > 0 then redis.call('DEL', w) end
  for _, e in ipairs(handed) do
    local nl = string.find(e, '\n', 1, true)
    if not nl then
      woken = true  -- a wake-up (wake(): a stop may be asked): the caller looks at once
    else
      local id = string.sub(e, 1, nl - 1)
      local h, body = get(id)
      if h and h.s == 'running' and h.o == owner and h.ct == 'h' then
        if stop then
          put_back(id, h, body, owner)
        else
          out[#out + 1] = id
          out[#out + 1] = string.sub(e, nl + 1)
        end
      end
    end
  end
end
if stop then return {discarded, out, false} end
redis.call('SET', P .. ':l:' .. owner, now, 'PX', lease)
if repeated then
  -- this call was sent before and its reply lost: the jobs it claimed then are the answer
  for _, id in ipairs(redis.call('SMEMBERS', hk(owner))) do
    local h, body = get(id)
    if h and h.ct == token then
      h.n, h.s, h.o, h.sa, h.ct, h.pf = tostring(tonumber(h.n) - 1), 'queued', nil, nil, nil, nil
      out[#out + 1] = id
      out[#out + 1] = expanded(text(h, body))
    end
  end
end
-- Claim: by priority, highest first; within one, by due time: due scheduled jobs by eta (then
-- insertion) merged with the queued line (FIFO; a queued job's due time is its enqueue time, a
-- requeued one's its eta), the queued job winning a tie.
-- A job over a rate or concurrency limit is held aside (admit) and the claim looks again,
-- a few rounds at most: jobs behind it are not blocked. Jobs held for a window that ended first go back.
rate_due(queue, now_ms() / 1000)
local rounds = 0
while true do
local want = limit - #out / 2
local ids = {}
if want > 0 and not (repeated and #out > 0) then
  for _, p in ipairs(redis.call('ZREVRANGE', pk(queue), 0, -1)) do
    local sl = sk(queue, p)
    local due = redis.call('ZRANGEBYSCORE', sl, '-inf', now, 'WITHSCORES', 'LIMIT', 0, want - #ids)
    if #due > 0 then
      -- the last eta taken may tie with ones left out: take them all in, then the first inserted
      local last = due[#due]
      local more = redis.call('ZRANGEBYSCORE', sl, last, last)
      local seen, cand = {}, {}
      for i = 1, #due, 2 do
        seen[due[i]] = true
        cand[#cand + 1] = {due[i], tonumber(due[i + 1])}
      end
      for _, id in ipairs(more) do
        if not seen[id] then cand[#cand + 1] = {id, tonumber(last)} end
      end
      local seqs = {}
      for _, c in ipairs(cand) do
        local h = get(c[1])
        seqs[c[1]] = h and tonumber(h.i) or 0
      end
      table.sort(cand, function(x, y)
        if x[2] ~= y[2] then return x[2] < y[2] end
        return seqs[x[1]] < seqs[y[1]]
      end)
      -- merge with the head of the queued line (RPOP order: the rightmost first)
      local room = want - #ids
      local line = redis.call('LRANGE', qk(queue, p), -room, -1)
      local taken, i, j, nq = {}, 1, #line, 0
      while #ids < want and (i <= #cand or j >= 1) do
        local q_first = false
        if j >= 1 then
          if i > #cand then
            q_first = true
          else
            local h, body = get(line[j])
            local qt = h and (tonumber(h.eta) or enqueued_at(body)) or 0
            q_first = qt <= cand[i][2]
          end
        end
        if q_first then
          ids[#ids + 1] = line[j]
          j, nq = j - 1, nq + 1
        else
          ids[#ids + 1] = cand[i][1]
          taken[#taken + 1] = cand[i][1]
          i = i + 1
        end
      end
      if nq > 0 then redis.call('RPOP', qk(queue, p), nq) end
      many('ZREM', sl, taken)
      many('ZREM', xk('scheduled'), taken)
    end
    if #ids < want then
      local popped = redis.call('RPOP', qk(queue, p), want - #ids)
      if popped then
        for _, id in ipairs(popped) do ids[#ids + 1] = id end
      end
    end
    tidy(queue, p)
    if #ids >= want then break end
  end
end
local passed = 0
if #ids > 0 then
  local vals = redis.call('HMGET', J, unpack(ids))
  local acc, hs, zs, held = {}, {}, {}, {}
  local ahead = #out > 0
  for i, id in ipairs(ids) do
    local v = vals[i]
    local h, body
    if v then h, body = parse(v) end
    if v and not admit(id, h, body) then
      passed = passed + 1
    elseif v then
      bump(acc, h.s, queue, -1)
      bump(acc, 'running', queue, 1)
      h.s, h.n, h.sa, h.o, h.ct, h.eta = 'running', tostring(tonumber(h.n) + 1), now, owner, token, nil
      if ahead then h.pf = '1' end
      ahead = true
      hs[#hs + 1] = id
      hs[#hs + 1] = text(h, body)
      zs[#zs + 1] = h.i
      zs[#zs + 1] = id
      held[#held + 1] = id
      out[#out + 1] = id
      out[#out + 1] = expanded(v)
    end
  end
  if #hs > 0 then
    many('HSET', J, hs)
    many('ZADD', xk('running'), zs)
    many('SADD', hk(owner), held)
    redis.call('SADD', OWNERS, owner)
    write_counts(acc)
  end
end
rounds = rounds + 1
if passed == 0 or rounds >= 16 then break end
end

local eta = false
if woken and blocks_until ~= '' then
  redis.call('RPUSH', wk(member), 'w')  -- the wait sent with this call returns at once
elseif #out == 0 and register and slot ~= '' then
  -- Nothing due: listen until an enqueue hands a job over (or this registration lapses).
  redis.call('ZADD', ik(queue), now_ms() + ttl, member)
  for _, p in ipairs(redis.call('ZRANGE', pk(queue), 0, -1)) do
    local z = redis.call('ZRANGE', sk(queue, p), 0, 0, 'WITHSCORES')
    if #z > 0 and (not eta or tonumber(z[2]) < tonumber(eta)) then eta = z[2] end
  end
  local z = redis.call('ZRANGE', P .. ':lt:' .. queue, 0, 0, 'WITHSCORES')  -- the next rate window
  if #z > 0 and (not eta or tonumber(z[2]) < tonumber(eta)) then eta = z[2] end
  if eta and blocks_until ~= '' and tonumber(eta) < tonumber(blocks_until) then
    redis.call('RPUSH', wk(member), 'w')  -- due before the wait sent with this call ends: wake it now
  end
elseif #out > 0 and blocks_until ~= '' then
  redis.call('RPUSH', wk(member), 'w')  -- the wait sent with this call returns at once
end
return {discarded, out, eta}
