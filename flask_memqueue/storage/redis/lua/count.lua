-- The counters (after forgetting jobs past the result TTL): ARGV = visible_after. A flat
-- list of field, value; a queue's waiting jobs are counted from its lists.
prune_before(ARGV[1])
local out = redis.call('HGETALL', CNT)
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local queued, scheduled = waiting_in(q, false)
  out[#out + 1] = 'queued|' .. q
  out[#out + 1] = tostring(queued)
  out[#out + 1] = 'scheduled|' .. q
  out[#out + 1] = tostring(scheduled)
end
return out
