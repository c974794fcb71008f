-- The texts of jobs, as Python reads them (task codes expanded, see expanded()): ARGV = ids.
-- A list in the same order, false for a job the store does not hold. A script rather than
-- HMGET so that a text and the name its code stands for are read at one instant.
local vals = redis.call('HMGET', J, unpack(ARGV))
for i, v in ipairs(vals) do vals[i] = expanded(v) end
return vals
