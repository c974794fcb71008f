-- Take over a job of an owner whose lease lapsed: ARGV = id, owner, the new state (JSON).
-- Conditional on the job still running for that owner, so two reclaimers never both take
-- it. A job claimed ahead that never started (``pf``) goes back to its queue instead,
-- its attempt not counted. Returns 1 if taken over.
local id, owner = ARGV[1], ARGV[2]
local h, body = get(id)
if not h or h.s ~= 'running' or h.o ~= owner then return 0 end
if h.pf then
  put_back(id, h, body, owner)
  return 1
end
local q, p = h.q, h.p
unindex(id, 'running', q, p, owner, false)
free_slot(h)
write_state(h, ARGV[3])
put(id, h, body)
index(id, h.s, q, p, h.i, h.eta, h.fa, h.o, true)
if FINISHED[h.s] then
  local done = {id}
  released(id, h, body, done)
  publish(done)
end
if h.s == 'queued' or h.s == 'scheduled' then wake(q, 1) end
return 1
