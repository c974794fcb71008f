-- Renew the owner's lease: ARGV = owner, lease ms. Returns 0 if it had lapsed.
local k = P .. ':l:' .. ARGV[1]
local had = redis.call('EXISTS', k)
redis.call('SET', k, '1', 'PX', ARGV[2])
return had
