-- Take over a job of an owner whose lease lapsed: ARGV = id, owner, 11 state values.
-- Conditional on the job still running for that owner, so two reclaimers never both take it.
local id, owner = ARGV[1], ARGV[2]
local h = get(id)
if not h or h.s ~= 'running' or h.o ~= owner then return 0 end
local q, p, seq = h.q, h.p, h.i
unindex(id, 'running', q, p, owner, false)
local v = write_state(h, 3)
put(id, v)
index(id, v.s, q, p, seq, v.eta, v.fa, v.o, true)
if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
if v.s == 'queued' or v.s == 'scheduled' then wake(q, 1) end
return 1
