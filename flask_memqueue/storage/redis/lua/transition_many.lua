-- A bulk action's batch (cancel or requeue), as transition.lua per job, in one call:
-- ARGV = count, then per job: id, from statuses (comma-separated), the new state (JSON).
-- Returns a list of 1 (changed) or 0 (its status was not one of those), in order.
local out, done, woken = {}, {}, {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local id, from, state = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local h, body = get(id)
  if not h or not string.find(',' .. from .. ',', ',' .. h.s .. ',', 1, true) then
    out[#out + 1] = 0
  else
    local q, p = h.q, h.p
    unindex(id, h.s, q, p, h.o, false)
    if h.s == 'deferred' then  -- its links are of no use any more
      redis.call('HDEL', P .. ':wt', id)
      redis.call('DEL', P .. ':lr:' .. id)
    end
    write_state(h, state)
    if h.s == 'queued' then
      h.i = tostring(redis.call('INCR', P .. ':seq'))  -- queued again: a new place, at the end of the line
    end
    put(id, h, body)
    index(id, h.s, q, p, h.i, h.eta, h.fa, h.o, false)
    if FINISHED[h.s] then
      done[#done + 1] = id
      released(id, h, body, done)
    end
    if h.s == 'queued' or h.s == 'scheduled' then woken[q] = (woken[q] or 0) + 1 end
    out[#out + 1] = 1
  end
end
if #done > 0 then publish(done) end
for q, n in pairs(woken) do wake(q, n) end
return out
