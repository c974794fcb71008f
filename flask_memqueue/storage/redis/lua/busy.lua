-- How many jobs have one of the statuses: ARGV = statuses (comma-separated),
-- due_before ('' for none: every scheduled job counts), queue ('' all).
local due, queue = ARGV[2], ARGV[3]
local total = 0
for st in string.gmatch(ARGV[1], '[^,]+') do
  if st == 'scheduled' and due ~= '' then
    for _, q in ipairs(queues(queue)) do
      for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
        total = total + redis.call('ZCOUNT', sk(q, p), '-inf', due)
      end
    end
  else
    local f = st
    if queue ~= '' then f = st .. '|' .. queue end
    total = total + tonumber(redis.call('HGET', CNT, f) or 0)
  end
end
return total
