-- Cancel: a queued job ends now, a running one gets the flag. KEYS: job, stats   ARGV: now, ttl
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'missing' end
if st == 'succeeded' or st == 'failed' or st == 'cancelled' then return 'terminal' end
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_requested', '1', 'finished_at', ARGV[1],
             'updated_at', ARGV[1], 'error', 'cancelled by request before it started')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
  return 'cancelled'
end
redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at', ARGV[1])
return 'requested'
