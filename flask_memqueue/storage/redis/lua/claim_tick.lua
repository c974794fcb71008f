-- Claim a periodic task's tick: ARGV = task, tick, now, has job (1/0), then the job's id,
-- status, eta, queue, priority, body. ``P:ticks`` keeps each task's last claimed tick as
-- "<tick> <job id or ''> <claimed at>", after its job is gone. 1 if claimed, 0 if a tick
-- at or after this one was claimed already (nothing written).
local TICKS = P .. ':ticks'
local task, tick, now = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', TICKS, task)
if cur and tonumber(string.match(cur, '^(%S+)')) >= tonumber(tick) then return 0 end
local id = ''
if ARGV[4] == '1' then
  id = ARGV[5]
  add(id, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], now, false, tick)
end
redis.call('HSET', TICKS, task, tick .. ' ' .. id .. ' ' .. now)
return 1
