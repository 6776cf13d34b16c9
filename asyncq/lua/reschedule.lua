-- retry, the queue part: schedule the next try and acknowledge this one, in one
-- step. The next try is scheduled only if the record part stored RETRY: a task
-- that became final meanwhile (revoked) tries no more.
-- KEYS[1]  the child's in-flight list
-- KEYS[2]  the queue's scheduled set
-- ARGV[1]  the message of this try
-- ARGV[2]  '1' if the record part stored RETRY
-- ARGV[3]  the message of the next try
-- ARGV[4]  when the next try is due (Unix seconds)
if ARGV[2] == '1' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3]) end
redis.call('LREM', KEYS[1], 1, ARGV[1])
