-- Cancel or requeue: ARGV = id, from statuses (comma-separated), 11 state values. 1 if done.
local id = ARGV[1]
local h = get(id)
if not h or not string.find(',' .. ARGV[2] .. ',', ',' .. h.s .. ',', 1, true) then return 0 end
local q, p, seq = h.q, h.p, h.i
unindex(id, h.s, q, p, h.o, false)
local v = write_state(h, 3)
if v.s == 'queued' then
  seq = tostring(redis.call('INCR', P .. ':seq'))  -- queued again: a new place, at the end of the line
  v.i = seq
end
put(id, v)
index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
if v.s == 'queued' or v.s == 'scheduled' then wake(q, 1) end
return 1
