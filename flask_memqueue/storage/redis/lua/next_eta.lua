-- The earliest eta of a scheduled job: ARGV = queue ('' all). A string, or false.
local best = false
for _, q in ipairs(queues(ARGV[1])) do
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    local z = redis.call('ZRANGE', sk(q, p), 0, 0, 'WITHSCORES')
    if #z > 0 and (not best or tonumber(z[2]) < tonumber(best)) then best = z[2] end
  end
end
return best
