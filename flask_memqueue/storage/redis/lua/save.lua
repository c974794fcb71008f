-- Record outcomes: ARGV = owner, n, then 5 values per job (see settle). Returns the
-- discarded late outcomes: {id, stored status, ...}.
local discarded, done = {}, {}
settle_many(ARGV[1], 3, tonumber(ARGV[2]), done, discarded)
publish(done)
return discarded
