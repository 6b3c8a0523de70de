-- Included by the worker-side transitions (line "--@owner_check <value>"): stop with <value> unless consumer
-- ARGV[3] still owns stream entry ARGV[2] of group ARGV[1] on stream KEYS[2] (fences a worker that lost its claim).
local p = redis.call('XPENDING', KEYS[2], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] then return @LOST end
