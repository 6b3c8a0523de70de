-- Terminal transition + XACK. KEYS: job, stream, stats   ARGV: group, entry, consumer, state, ttl, field, value, ...
--@owner_check 0
local fields = {'state', ARGV[4]}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
return 1
