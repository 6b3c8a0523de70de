-- Mark a delivered job running: 'run', or why not (a terminal state / 'missing': entry acked; 'lost'; 'dead').
-- KEYS: job, stream   ARGV: group, entry, consumer, now, stream_deliveries, max_deliveries
local st = redis.call('HGET', KEYS[1], 'state')
if (not st) or st == 'succeeded' or st == 'failed' or st == 'cancelled' then
  redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  return st or 'missing'
end
--@owner_check 'lost'
if tonumber(ARGV[5]) > tonumber(ARGV[6]) then return 'dead' end
redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[4], 'worker', ARGV[3], 'stage', 'starting',
           'progress', '0', 'heartbeat_at', ARGV[4], 'updated_at', ARGV[4], 'entry', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first_started_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
return 'run'
