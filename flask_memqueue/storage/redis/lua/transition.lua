-- Cancel or requeue: ARGV = id, from statuses (comma-separated), the new state (JSON). 1 if done.
local id = ARGV[1]
local h, body = get(id)
if not h or not string.find(',' .. ARGV[2] .. ',', ',' .. h.s .. ',', 1, true) then return 0 end
local q, p = h.q, h.p
if h.hd then unhold_index(id, h) end  -- held for a limit: out of the held indexes
unindex(id, h.s, q, p, h.o, false)
if h.s == 'deferred' then  -- its links are of no use any more
  redis.call('HDEL', P .. ':wt', id)
  redis.call('DEL', P .. ':lr:' .. id)
end
write_state(h, ARGV[3])
if h.s == 'queued' then
  h.i = tostring(redis.call('INCR', P .. ':seq'))  -- queued again: a new place, at the end of the line
end
put(id, h, body)
index(id, h.s, q, p, h.i, h.eta, h.fa, h.o, false)
if FINISHED[h.s] then
  local done = {id}
  released(id, h, body, done)
  publish(done)
end
if h.s == 'queued' or h.s == 'scheduled' then wake(q, 1) end
return 1
