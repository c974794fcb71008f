-- The abort requests of these running jobs: ARGV = ids; returns id, reason pairs.
local out = {}
for _, id in ipairs(ARGV) do
  local h = get(id)
  if h and h.s == 'running' and h.ab and h.abc == (h.ct or '') then
    out[#out + 1] = id
    out[#out + 1] = h.ab
  end
end
return out
