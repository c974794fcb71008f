-- Renew the owner's lease: ARGV = owner, lease ms. Returns {1 if it had not lapsed, the ids
-- the store has running for this owner}.
local k = P .. ':l:' .. ARGV[1]
local had = redis.call('EXISTS', k)
redis.call('SET', k, '1', 'PX', ARGV[2])
return {had, redis.call('SMEMBERS', hk(ARGV[1]))}
