-- a canvas follow-up: count a chord member that succeeded; the member that
-- completes the set queues the first tasks of the chord's body, once. Their
-- messages were written beside the set when the chord was sent, once for all
-- members (each member's record names the chord, not the body).
-- KEYS[1]     the chord's member set (beside the body's queue: one slot)
-- KEYS[2]     the body's messages, a JSON list of strings (same slot)
-- KEYS[3..]   the queue list of each of the body's first tasks, in that order
-- ARGV[1]     the member's task id
-- ARGV[2]     TTL of the set (seconds)
-- ARGV[3]     how many members the chord has
-- Returns 1 if this member completed the chord, -1 if it did but the body's
-- messages are gone (expired), else 0.
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if added == 0 or redis.call('SCARD', KEYS[1]) ~= tonumber(ARGV[3]) then return 0 end
local bodies = redis.call('GET', KEYS[2])
if not bodies then return -1 end
bodies = cjson.decode(bodies)
for i = 3, #KEYS do redis.call('LPUSH', KEYS[i], bodies[i - 2]) end
return 1
