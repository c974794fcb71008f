-- Delete the finished jobs among ARGV (ids); a job that waits or runs stays. Returns how many.
local n = 0
for _, id in ipairs(ARGV) do
  local h = get(id)
  if h and FINISHED[h.s] then
    forget(id)
    n = n + 1
  end
end
return n
