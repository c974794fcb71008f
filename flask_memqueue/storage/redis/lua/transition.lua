-- Cancel or requeue: ARGV = id, from statuses (comma-separated), the new state (JSON). 1 if done.
local done = {}
local changed, waits_in = transition_one(ARGV[1], ARGV[2], ARGV[3], done)
if not changed then return 0 end
publish(done)
if waits_in then wake(waits_in, 1) end
return 1
