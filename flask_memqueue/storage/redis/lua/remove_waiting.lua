-- Delete every waiting job (queued, scheduled, deferred) and return them, oldest inserted first.
local found = {}
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    local ids = redis.call('LRANGE', qk(q, p), 0, -1)
    for _, id in ipairs(redis.call('ZRANGE', sk(q, p), 0, -1)) do ids[#ids + 1] = id end
    for _, id in ipairs(ids) do
      local v = redis.call('HGET', J, id)
      if v then
        local h = parse(v)
        found[#found + 1] = {tonumber(h.i), {id, expanded(v)}}
        if h.s == 'scheduled' then redis.call('ZREM', xk('scheduled'), id) end
        if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
        count(h.s, q, -1)
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
    if h.s == 'deferred' then
      found[#found + 1] = {tonumber(h.i), {id, expanded(v)}}
      if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
      count('deferred', h.q, -1)
      redis.call('HDEL', J, id)
    end
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
