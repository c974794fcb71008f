-- The running jobs of an owner: ARGV = owner.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', hk(ARGV[1]))) do
  local v = redis.call('HGET', J, id)
  if v and parse(v).o == ARGV[1] then out[#out + 1] = {id, expanded(v)} end
end
return out
