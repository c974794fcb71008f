-- Progress of running jobs: ARGV = owner, then id, progress, message (tagged) per job.
local owner = ARGV[1]
for b = 2, #ARGV, 3 do
  local h = get(ARGV[b])
  if h and h.s == 'running' and h.o == owner then
    h.pg, h.pm = ARGV[b + 1], dec(ARGV[b + 2]) or nil
    put(ARGV[b], h)
  end
end
return 1
