-- The rate and concurrency limits in use: {running per concurrency key (HGETALL P:lu), each key's
-- limit (P:ll), each rate key's window (P:rw: "<end> <count> <limit> <period>"), jobs held per
-- "c|<key>" / "r|<key>" (P:lw)}. Windows that ended are forgotten here.
local rw = redis.call('HGETALL', P .. ':rw')
local now = now_ms() / 1000
local live = {}
for i = 1, #rw, 2 do
  local e = tonumber(string.match(rw[i + 1], '^(%S+)'))
  if e <= now and not redis.call('HGET', P .. ':lw', 'r|' .. rw[i]) then
    redis.call('HDEL', P .. ':rw', rw[i])
  else
    live[#live + 1] = rw[i]
    live[#live + 1] = rw[i + 1]
  end
end
return {redis.call('HGETALL', P .. ':lu'), redis.call('HGETALL', P .. ':ll'), live, redis.call('HGETALL', P .. ':lw')}
