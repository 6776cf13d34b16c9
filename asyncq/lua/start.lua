-- start: mark the record of a task a child begins and make the child its owner,
-- unless the task already has a final state (SUCCESS, FAILURE, REVOKED, REJECTED:
-- this message is a duplicate), or another child owns a run of it now (a second
-- copy of the message: one run at a time per task id).
-- KEYS[1]  the task record
-- ARGV[1]  worker id
-- ARGV[2]  now (Unix seconds)
-- ARGV[3]  record TTL (seconds), for a record that is missing (it expired)
-- ARGV[4]  '1' if the task acknowledges late (acks_late), else '0'
-- ARGV[5]  the status to show: 'STARTED', or '' to leave it as it is
-- ARGV[6]  the task's message (JSON: its args and kwargs among its fields), kept in
--          the record as its call ('' = don't: result_extended is off)
-- ARGV[7]  the owner: the child's in-flight list holding the message
-- Returns what follows the task in its canvas (field 'then', '' = nothing); or,
-- when the task is already final, {its status, the follow-up plan its record
-- still holds ('' = none)}; or, when another child runs it, {'', that owner}.
-- A run's owner goes when it ends: a final state, a RETRY, or recovery putting
-- the message back (requeued.lua).
local status, after, after_it, started, owner = unpack(redis.call(
  'HMGET', KEYS[1], 'status', 'after', 'then', 'started_at', 'owner'))
if status == 'SUCCESS' or status == 'FAILURE' or status == 'REVOKED'
    or status == 'REJECTED' then
  return {status, after or ''}
end
if started and owner and owner ~= ARGV[7] then return {'', owner} end
local fields = {'worker', ARGV[1], 'started_at', ARGV[2], 'acks_late', ARGV[4],
                'owner', ARGV[7]}
if ARGV[5] ~= '' then fields[#fields + 1], fields[#fields + 2] = 'status', ARGV[5] end
if ARGV[6] ~= '' then fields[#fields + 1], fields[#fields + 2] = 'call', ARGV[6] end
redis.call('HSET', KEYS[1], unpack(fields))
if not status then redis.call('EXPIRE', KEYS[1], ARGV[3]) end  -- else it keeps its TTL
return after_it or ''
