-- Progress of running jobs: ARGV = owner, nstarted, the ids of jobs claimed ahead that have
-- started since (no longer given back if the owner dies), then id, progress, message
-- (tagged) per job.
local owner, ns = ARGV[1], tonumber(ARGV[2])
for i = 3, 2 + ns do
  local h, body = get(ARGV[i])
  if h and h.s == 'running' and h.o == owner and h.pf then
    h.pf = nil
    put(ARGV[i], h, body)
  end
end
for b = 3 + ns, #ARGV, 3 do
  local h, body = get(ARGV[b])
  if h and h.s == 'running' and h.o == owner then
    h.pg, h.pm = ARGV[b + 1], dec(ARGV[b + 2]) or nil
    put(ARGV[b], h, body)
  end
end
return 1
