-- Owners holding running jobs, each with 1 if its lease is alive: {owner, 1|0, ...}. An
-- owner whose jobs all finished is forgotten here (the scripts that finish jobs leave it).
local out = {}
for _, o in ipairs(redis.call('SMEMBERS', OWNERS)) do
  if redis.call('SCARD', hk(o)) == 0 then
    redis.call('SREM', OWNERS, o)
  else
    out[#out + 1] = o
    out[#out + 1] = redis.call('EXISTS', P .. ':l:' .. o)
  end
end
return out
