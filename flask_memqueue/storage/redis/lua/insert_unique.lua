-- Add a job unless a live job holds its unique key: ARGV = full (1/0), now, then the job's
-- id, status, eta, queue, priority, body, unique key. ``P:uk`` maps each key to the job
-- that took it last (forget() drops the entry with its job). Returns the holder's record,
-- the new job's, or false (no holder, and full).
local UK = P .. ':uk'
local key = ARGV[9]
local holder = redis.call('HGET', UK, key)
if holder then
  local h = get(holder)
  if h and (h.s == 'queued' or h.s == 'scheduled' or h.s == 'running') then return rec(holder) end
end
if ARGV[1] == '1' then return false end
local id, q = ARGV[3], ARGV[6]
add(id, ARGV[4], ARGV[5], q, ARGV[7], ARGV[8], ARGV[2], key, false)
redis.call('HSET', UK, key, id)
return rec(id)
