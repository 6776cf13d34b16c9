-- recover, the queue part: put a message a dead child held back at the head of
-- its queue, only if this call took it from the in-flight list: of two
-- recoverers, one moves it.
-- KEYS[1]  the dead child's in-flight list
-- KEYS[2]  the queue's list for the message's priority
-- ARGV[1]  the message
-- Returns 1 if this call moved it.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
