-- Forget every finished job; returns how many.
local ids = redis.call('ZRANGE', FIN, 0, -1)
for _, id in ipairs(ids) do forget(id) end
return #ids
