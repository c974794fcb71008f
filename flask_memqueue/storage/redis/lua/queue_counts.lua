-- Counts of waiting and running jobs by queue: {queue, queued, scheduled, running, ...}.
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  local queued, scheduled = waiting_in(q, false)
  out[#out + 1] = q
  out[#out + 1] = queued
  out[#out + 1] = scheduled
  out[#out + 1] = tonumber(redis.call('HGET', CNT, 'running|' .. q) or 0)
end
return out
