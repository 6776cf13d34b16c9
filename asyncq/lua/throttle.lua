-- throttle: a task's rate limit, shared by every worker of the queue. Each message
-- of the task takes the next free slot (one every `interval` seconds) and keeps it:
-- if the slot is now, it runs; if later, the message waits for it in the queue's
-- scheduled set (leaving the child's in-flight list in the same step, so it is
-- never lost and never held by a child while it waits), and runs when it is back.
-- KEYS[1]  the task's rate key on this queue: when its next free slot starts
-- KEYS[2]  the task's slots taken by waiting messages (hash: task id -> slot)
-- KEYS[3]  the child's in-flight list
-- KEYS[4]  the queue's scheduled set
-- ARGV[1]  the message
-- ARGV[2]  its task id
-- ARGV[3]  now (Unix seconds)
-- ARGV[4]  the interval between two runs (seconds)
-- Returns '0' to run it now, else the time it waits until ('-1': it was not held).
local now = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local slot = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '')
if slot then
  if slot <= now then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return '0'
  end
else
  slot = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
  local keep_ms = math.ceil((slot + interval - now) * 1000) + 60000
  redis.call('SET', KEYS[1], string.format('%.6f', slot + interval), 'PX', keep_ms)
  if slot <= now then
    return '0'
  end
  redis.call('HSET', KEYS[2], ARGV[2], string.format('%.6f', slot))
  redis.call('PEXPIRE', KEYS[2], keep_ms)
end
if redis.call('LREM', KEYS[3], 1, ARGV[1]) == 0 then
  return '-1'
end
redis.call('ZADD', KEYS[4], string.format('%.6f', slot), ARGV[1])
return string.format('%.6f', slot)
