-- Add jobs: ARGV = maxsize, now, n, then 6 values per job (id, status, eta or '', queue,
-- priority, body). Returns how many were added (a prefix of them): the waiting jobs of the
-- app stay within maxsize exactly, across every enqueuer. An id the store holds already
-- counts as added (a repeated call after a lost reply). A queued job goes straight to an
-- idle consumer of its queue when one waits (see add).
local maxsize, now, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local room = n
if maxsize > 0 then
  local c = redis.call('HMGET', CNT, 'queued', 'scheduled', 'deferred')
  room = math.max(0, math.min(n, maxsize - tonumber(c[1] or 0) - tonumber(c[2] or 0) - tonumber(c[3] or 0)))
end
for i = 0, room - 1 do
  local b = 4 + i * 6
  add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], now, false, false)
end
return room
