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
-- ARGV[5]    the run storing it: the child's in-flight list ('' = not a run: a
--            revoke, a recovery, a canvas passing a failure on)
-- ARGV[6..]  the state's field/value pairs, 'status' among them
-- A run stores only while it owns the task: after its worker was presumed dead,
-- another run may own it now, and that run's outcome is the task's.
-- A RETRY ends this try: started_at and the owner go, so that a crash before the
-- next try is scheduled lets recovery put the message back as never started.
-- Returns {1 if it stored, else 0; the plan the record now holds ('' = none):
-- this call's own when it stored, else one an earlier finish stored but did not
-- get to apply; when it did not store, the final record's finished_at ('' = none),
-- by which a finish tried again after a lost answer recognises its own; the
-- owner of another run when that kept this one from storing ('' = none)}.
local status, after, finished, owner = unpack(
  redis.call('HMGET', KEYS[1], 'status', 'after', 'finished_at', 'owner'))
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
    or status == 'REJECTED' then
  return {0, after or '', finished or '', ''}
end
if ARGV[1] == '' and not status then return {0, '', '', ''} end
if ARGV[5] ~= '' and owner and owner ~= ARGV[5] then return {0, '', '', owner} end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
for i = 6, #ARGV - 1, 2 do
  if ARGV[i] == 'status' and ARGV[i + 1] == 'RETRY' then
    redis.call('HDEL', KEYS[1], 'started_at', 'owner')
  end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'after', ARGV[4]) end
if ARGV[1] ~= '' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {1, ARGV[4], '', ''}
