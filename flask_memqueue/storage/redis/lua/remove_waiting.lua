-- Delete every waiting job (queued, scheduled, deferred) and return them, oldest inserted first.
local found = {}
-- A job dropped here: one to return (its text as stored, the task's code expanded), its unique
-- key freed, its count taken back.
local function drop(id, v, h, q)
  found[#found + 1] = {tonumber(h.i), {id, expanded(v)}}
  if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
  count(h.s, q, -1)
  redis.call('HDEL', J, id)
end
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  -- Queued jobs held aside for a limit (a concurrency slot, a rate window) wait too: left
  -- behind, one would run when its slot or window came. Out of the held indexes (P:lq, P:lt,
  -- P:lh:<key>) and their counts (P:lw) first.
  for _, id in ipairs(redis.call('ZRANGE', P .. ':lq:' .. q, 0, -1)) do
    local v = redis.call('HGET', J, id)
    if v then
      local h = parse(v)
      if h.hd then unhold_index(id, h) end
      drop(id, v, h, q)
    end
  end
  redis.call('DEL', P .. ':lq:' .. q, P .. ':lt:' .. q)
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    local ids = redis.call('LRANGE', qk(q, p), 0, -1)
    for _, id in ipairs(redis.call('ZRANGE', sk(q, p), 0, -1)) do ids[#ids + 1] = id end
    for _, id in ipairs(ids) do
      local v = redis.call('HGET', J, id)
      if v then
        local h = parse(v)
        if h.s == 'scheduled' then redis.call('ZREM', xk('scheduled'), id) end
        drop(id, v, h, q)
      end
      redis.call('HDEL', J, id)
    end
    redis.call('DEL', qk(q, p), sk(q, p))
    redis.call('ZREM', pk(q), p)
  end
end
-- Deferred jobs wait too (on a parent): dropped with the rest, or they would stay deferred for
-- ever once their parents are gone. Their counters and used links go with them.
for _, id in ipairs(redis.call('ZRANGE', xk('deferred'), 0, -1)) do
  local v = redis.call('HGET', J, id)
  if v then
    local h = parse(v)
    if h.s == 'deferred' then drop(id, v, h, h.q) end
  end
  redis.call('HDEL', P .. ':wt', id)
  redis.call('DEL', P .. ':lr:' .. id)
end
redis.call('DEL', xk('deferred'))
table.sort(found, function(x, y) return x[1] < y[1] end)
local out = {}
for i, f in ipairs(found) do out[i] = f[2] end
if #out > 0 then redis.call('PUBLISH', DONE, '') end  -- a join() elsewhere looks again
return out
