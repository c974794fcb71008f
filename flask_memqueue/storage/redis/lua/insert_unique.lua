-- Add a job unless a live job holds its unique key: ARGV = full (1/0), then the 11
-- values of add_one. ``P:uk`` maps each key to the job that took it last (forget()
-- drops the entry with its job). Returns the holder's record, the new job's, or false
-- (no holder, and full).
local UK = P .. ':uk'
local key = dec(ARGV[11])
local holder = redis.call('HGET', UK, key)
if holder then
  local h = get(holder)
  if h and (h.s == 'queued' or h.s == 'scheduled' or h.s == 'running') then return rec(holder) end
end
if ARGV[1] == '1' then return false end
local id = add_one(2)
redis.call('HSET', UK, key, id)
return rec(id)
