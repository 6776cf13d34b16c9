-- store: write a task's new state, unless its record holds a final one (SUCCESS,
-- FAILURE, REVOKED, REJECTED): so every task ends exactly once. All states go through
-- here: a final state from the task's end, a revocation, a lost or dead-lettered
-- task, a RETRY, and custom states such as PROGRESS.
-- KEYS[1]    the task record
-- ARGV[1]    TTL to set (seconds); '' = a custom state: update only a record
--            that exists, and keep its TTL (no record is made without one)
-- ARGV[2]    the task's channel
-- ARGV[3]    what to tell the channel
-- ARGV[4]    the follow-up plan to keep in field 'after' until applied ('' = none)
-- ARGV[5..]  the state's field/value pairs, 'status' among them
-- A RETRY ends this try: started_at goes, so that a crash before the next try is
-- scheduled lets recovery put the message back as never started.
-- Returns {1 if it stored, else 0; the plan the record now holds ('' = none):
-- this call's own when it stored, else one an earlier finish stored but did not
-- get to apply; when it did not store, the final record's finished_at ('' = none),
-- by which a finish tried again after a lost answer recognises its own}.
local status, after, finished = unpack(
  redis.call('HMGET', KEYS[1], 'status', 'after', 'finished_at'))
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
    or status == 'REJECTED' then
  return {0, after or '', finished or ''}
end
if ARGV[1] == '' and not status then return {0, '', ''} end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
for i = 5, #ARGV - 1, 2 do
  if ARGV[i] == 'status' and ARGV[i + 1] == 'RETRY' then
    redis.call('HDEL', KEYS[1], 'started_at')
  end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'after', ARGV[4]) end
if ARGV[1] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, ARGV[4], ''}
