-- enqueue, later: move one due message from the scheduled set to its queue list.
-- Whichever worker removes it from the set is the one that queues it: it moves once.
-- KEYS[1]  the queue's scheduled set
-- KEYS[2]  the queue's list for the message's priority
-- ARGV[1]  the message
-- Returns 1 if this call moved it.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
