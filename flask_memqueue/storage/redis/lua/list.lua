-- Jobs newest inserted first: ARGV = status ('' all), limit, offset, visible_after, queue ('' all).
local status, limit, offset, queue = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
prune_before(ARGV[4])
local want = offset + limit
local found = {}
if status == '' or status == 'queued' then
  for _, q in ipairs(queues(queue)) do
    for _, id in ipairs(redis.call('ZREVRANGE', P .. ':lq:' .. q, 0, want - 1)) do  -- held for a limit
      local v = redis.call('HGET', J, id)
      if v then found[#found + 1] = {tonumber(parse(v).i), id, v} end
    end
    for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
      for _, id in ipairs(redis.call('LRANGE', qk(q, p), 0, want - 1)) do
        local v = redis.call('HGET', J, id)
        if v then found[#found + 1] = {tonumber(parse(v).i), id, v} end
      end
    end
  end
end
for _, st in ipairs({'scheduled', 'deferred', 'running', 'succeeded', 'failed', 'cancelled', 'aborted'}) do
  if status == '' or status == st then
    local stop = want - 1
    if queue ~= '' then stop = -1 end  -- filtered by queue: look at every one
    local z = redis.call('ZREVRANGE', xk(st), 0, stop, 'WITHSCORES')
    for i = 1, #z, 2 do
      local v = redis.call('HGET', J, z[i])
      if v and (queue == '' or parse(v).q == queue) then found[#found + 1] = {tonumber(z[i + 1]), z[i], v} end
    end
  end
end
table.sort(found, function(x, y) return x[1] > y[1] end)
local out = {}
for i = offset + 1, math.min(#found, want) do out[#out + 1] = {found[i][2], expanded(found[i][3])} end
return out
