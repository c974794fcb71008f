-- Forget finished jobs: ARGV = finished_before, keep (the newest ``keep`` stay).
local n = prune_before(ARGV[1])
local keep = tonumber(ARGV[2])
local total = redis.call('ZCARD', FIN)
if total > keep then
  for _, id in ipairs(redis.call('ZRANGE', FIN, 0, total - keep - 1)) do forget(id) end
  n = n + total - keep
end
return n
