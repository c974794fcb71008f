-- Counts of waiting and running jobs by queue: {queue, queued, scheduled, running, ...}.
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  out[#out + 1] = q
  for _, st in ipairs({'queued', 'scheduled', 'running'}) do
    out[#out + 1] = tonumber(redis.call('HGET', CNT, st .. '|' .. q) or 0)
  end
end
return out
