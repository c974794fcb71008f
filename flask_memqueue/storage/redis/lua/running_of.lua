-- The running jobs of an owner: ARGV = owner.
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', hk(ARGV[1]))) do
  local h = get(id)
  if h and h.o == ARGV[1] then out[#out + 1] = {id, cjson.encode(h)} end
end
return out
