-- Add one job from 11 ARGV values at b (those of INSERT, then its unique key and its
-- tick, tagged); returns its id. Shared by the two scripts below.
local function add_one(b)
  local id = ARGV[b]
  local seq = tostring(redis.call('INCR', P .. ':seq'))
  local st, q, p = ARGV[b + 4], ARGV[b + 7], ARGV[b + 8]
  local h = {t = ARGV[b + 1], a = ARGV[b + 2], s = st, n = '0', e = ARGV[b + 5], i = seq, q = q, p = p}
  local kw = dec(ARGV[b + 3])
  if kw then h.k = kw end
  local eta = dec(ARGV[b + 6])
  if eta then h.eta = eta end
  local uk = dec(ARGV[b + 9])
  if uk then h.uk = uk end
  local tk = dec(ARGV[b + 10])
  if tk then h.tk = tk end
  put(id, h)
  redis.call('SADD', QUEUES, q)
  index(id, st, q, p, seq, eta, false, false, false)
  wake(q, 1)
  return id
end
