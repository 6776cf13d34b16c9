-- drop_record: delete the record of a task whose result is not kept (ignore_result),
-- with the acknowledgement of the run that ended it; never the record of a run that
-- owns the task now (after this run's worker was presumed dead).
-- KEYS[1]  the task record
-- ARGV[1]  the run: the child's in-flight list
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner or owner == ARGV[1] then redis.call('DEL', KEYS[1]) end
