-- Keep a held entry claimed (resets its idle time). KEYS: job, stream   ARGV: group, entry, consumer, now
--@owner_check 0
redis.call('XCLAIM', KEYS[2], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[4])
return 1
