-- Fail a job past the delivery limit and record it in the dead-letter stream.
-- KEYS: job, stream, stats, dead   ARGV: group, entry, consumer, now, ttl, job_id, reason, deliveries
redis.call('XADD', KEYS[4], '*', 'job', ARGV[6], 'reason', ARGV[7], 'deliveries', ARGV[8], 'at', ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[7], 'finished_at', ARGV[4], 'updated_at', ARGV[4],
           'stage', 'dead-letter')
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'failed', 1)
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
return 1
