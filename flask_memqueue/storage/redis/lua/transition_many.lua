-- A bulk action's batch (cancel or requeue), as transition.lua per job, in one call:
-- ARGV = count, then per job: id, from statuses (comma-separated), the new state (JSON).
-- Returns a list of 1 (changed) or 0 (its status was not one of those), in order.
local out, done, woken = {}, {}, {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local changed, waits_in = transition_one(ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i], done)
  out[#out + 1] = changed and 1 or 0
  if waits_in then woken[waits_in] = (woken[waits_in] or 0) + 1 end
end
publish(done)
for q, n in pairs(woken) do wake(q, n) end
return out
