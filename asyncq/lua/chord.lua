-- a canvas follow-up: count a chord member that succeeded; the member that
-- completes the set queues the first tasks of the chord's body, once.
-- KEYS[1]     the chord's member set (beside the body's queue: one slot)
-- KEYS[2..]   the queue list of each of the body's first tasks
-- ARGV[1]     the member's task id
-- ARGV[2]     TTL of the set (seconds)
-- ARGV[3]     how many members the chord has
-- ARGV[4..]   the messages of the body's first tasks, in the order of KEYS[2..]
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if added == 1 and redis.call('SCARD', KEYS[1]) == tonumber(ARGV[3]) then
  for i = 2, #KEYS do redis.call('LPUSH', KEYS[i], ARGV[i + 2]) end
end
