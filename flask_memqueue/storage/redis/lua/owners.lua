-- Owners holding running jobs, each with 1 if its lease is alive: {owner, 1|0, ...}.
local out = {}
for _, o in ipairs(redis.call('SMEMBERS', OWNERS)) do
  out[#out + 1] = o
  out[#out + 1] = redis.call('EXISTS', P .. ':l:' .. o)
end
return out
