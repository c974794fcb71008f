-- How many jobs have one of the statuses: ARGV = statuses (comma-separated),
-- due_before ('' for none: every scheduled job counts), queue ('' all).
local due, queue = ARGV[2], ARGV[3]
if due == '' then due = false end
local total = 0
for st in string.gmatch(ARGV[1], '[^,]+') do
  if WAITING[st] and (queue ~= '' or (st == 'scheduled' and due)) then
    for _, q in ipairs(queues(queue)) do
      local queued, scheduled = waiting_in(q, due)
      if st == 'queued' then total = total + queued else total = total + scheduled end
    end
  else
    local f = st
    if queue ~= '' then f = st .. '|' .. queue end
    total = total + tonumber(redis.call('HGET', CNT, f) or 0)
  end
end
return total
