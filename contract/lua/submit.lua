-- Queue a job (or return the live job with the same scan + options).
-- KEYS: dedup, job, stream, index   ARGV: id, force, created, job-key-prefix, field, value, ...
if ARGV[2] == '0' then
  local existing = redis.call('GET', KEYS[1])
  if existing then
    local st = redis.call('HGET', ARGV[4] .. existing, 'state')
    if st and st ~= 'failed' and st ~= 'cancelled' then return {existing, 0} end
  end
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local entry = redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[2], 'entry', entry)
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return {ARGV[1], 1}
