-- Ask a running job to stop: ARGV = id, reason. The request names the claim it was
-- asked of (h.ct), so a later run of the job (requeued) does not read it. 1 if it runs.
local h, body = get(ARGV[1])
if not h or h.s ~= 'running' then return 0 end
h.ab, h.abc = ARGV[2], h.ct or ''
put(ARGV[1], h, body)
return 1
