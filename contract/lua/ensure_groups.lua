-- Create consumer group ARGV[1] on every stream in KEYS (with MKSTREAM) unless it is there already; returns how
-- many were created. Atomic, so two processes starting together cannot both try to create a group.
local created = 0
for _, key in ipairs(KEYS) do
  local found = false
  if redis.call('EXISTS', key) == 1 then
    for _, group in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      for i = 1, #group, 2 do
        if group[i] == 'name' and group[i + 1] == ARGV[1] then found = true end
      end
    end
  end
  if not found then
    redis.call('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
    created = created + 1
  end
end
return created
