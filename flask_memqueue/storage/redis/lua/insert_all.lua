-- Add a batch of jobs, all or none (enqueue_many): ARGV = maxsize, now, n, then one JSON array
-- of jobs, each the 6 text values insert.lua takes per job (id, status, eta or '', queue,
-- priority, body): one argument, not 6n (packing tens of thousands of arguments cost the
-- client more than the script). Returns 1 when added, 0 when the waiting jobs of the app
-- and these would be more than maxsize (nothing is added). A batch whose first job the store
-- holds already was added by this very call before its reply was lost: 1, nothing added twice.
local maxsize, now, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if n == 0 then return 1 end
local batch = cjson.decode(ARGV[4])
if redis.call('HEXISTS', J, batch[1][1]) == 1 then return 1 end
if maxsize > 0 then
  local c = redis.call('HMGET', CNT, 'queued', 'scheduled', 'deferred')
  if tonumber(c[1] or 0) + tonumber(c[2] or 0) + tonumber(c[3] or 0) + n > maxsize then return 0 end
end
for i = 1, n do
  local v = batch[i]
  add(v[1], v[2], v[3], v[4], v[5], v[6], now, false, false)
end
return 1
