-- Put a held job back at the end of its stream as queued. KEYS: job, stream
-- ARGV: group, entry, consumer, now, job_id, reason
--@owner_check 0
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'queued', 'stage', ARGV[6], 'progress', '0', 'entry', entry, 'worker', '',
           'updated_at', ARGV[4])
return 1
