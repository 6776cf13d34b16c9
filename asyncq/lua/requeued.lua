-- recover, the record part, after the message went back on its queue: PENDING
-- again, unless the task is final meanwhile or a new start already happened (its
-- started_at differs from the one the recoverer read), which must not be undone.
-- KEYS[1]  the task record
-- ARGV[1]  the started_at the recoverer read ('' = none)
-- ARGV[2]  '1' to count a redelivery
-- Returns 1 if the task was not final, else 0.
local status, started = unpack(redis.call('HMGET', KEYS[1], 'status', 'started_at'))
if not status or status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
    or status == 'REJECTED' then
  return 0
end
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[1], 'redeliveries', 1) end
if (started or '') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'status', 'PENDING')
  redis.call('HDEL', KEYS[1], 'started_at', 'owner')
end
return 1
