-- defer: a copy of a message whose task another child is running waits in the
-- scheduled set and is tried again later (dropped then if the task is final), but
-- only if this child still holds it: a message recovered away from a frozen child
-- is not this child's to move.
-- KEYS[1]  the child's in-flight list
-- KEYS[2]  the queue's scheduled set
-- ARGV[1]  the message
-- ARGV[2]  when to try it again (Unix seconds)
-- Returns 1 if it was deferred, 0 if the child no longer held it.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
