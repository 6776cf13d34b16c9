-- a canvas follow-up: count a chord member that succeeded; the member that
-- completes the set queues the chord's body, once.
-- KEYS[1]  the chord's member set (beside the body's queue: one slot)
-- KEYS[2]  the body's queue list
-- ARGV[1]  the member's task id
-- ARGV[2]  TTL of the set (seconds)
-- ARGV[3]  how many members the chord has
-- ARGV[4]  the body's message
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if added == 1 and redis.call('SCARD', KEYS[1]) == tonumber(ARGV[3]) then
  redis.call('LPUSH', KEYS[2], ARGV[4])
end
