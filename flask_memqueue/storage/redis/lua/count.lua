-- The counters (after forgetting jobs past the result TTL): ARGV = visible_after.
prune_before(ARGV[1])
return redis.call('HGETALL', CNT)
