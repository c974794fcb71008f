-- Add jobs: ARGV = maxsize, n, then 9 values per job (id, task, args, kwargs, status,
-- enqueued_at, eta, queue, priority). Returns how many were added (a prefix of them):
-- the waiting jobs of the app stay within maxsize exactly, across every enqueuer. An id
-- the store holds already counts as added (a repeated call after a lost reply).
local maxsize, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local room = n
if maxsize > 0 then
  local waiting = tonumber(redis.call('HGET', CNT, 'queued') or 0) + tonumber(redis.call('HGET', CNT, 'scheduled') or 0)
  room = math.max(0, math.min(n, maxsize - waiting))
end
local woken = {}
for i = 0, room - 1 do
  local b = 3 + i * 9
  local id = ARGV[b]
  if redis.call('EXISTS', jk(id)) == 0 then
    local seq = tostring(redis.call('INCR', P .. ':seq'))
    local st, q, p = ARGV[b + 4], ARGV[b + 7], ARGV[b + 8]
    local h = {t = ARGV[b + 1], a = ARGV[b + 2], s = st, n = '0', e = ARGV[b + 5], i = seq, q = q, p = p}
    local kw = dec(ARGV[b + 3])
    if kw then h.k = kw end
    local eta = dec(ARGV[b + 6])
    if eta then h.eta = eta end
    put(id, h)
    if not woken[q] then redis.call('SADD', QUEUES, q) end
    index(id, st, q, p, seq, eta, false, false, false)
    woken[q] = (woken[q] or 0) + 1
  end
end
for q, c in pairs(woken) do wake(q, c) end
return room
