-- enqueue, the record part: write the task's PENDING record, before its message
-- is queued, so that whoever takes the message finds the record.
-- KEYS[1]  the task record
-- ARGV[1]  task name
-- ARGV[2]  queue name
-- ARGV[3]  now (Unix seconds)
-- ARGV[4]  record TTL (seconds)
-- ARGV[5]  when it is due ('' = now)
-- ARGV[6]  '1' to clear a record already under this id (a task_id given again),
--          'new' to write it only if there is none (a periodic run: every scheduler
--          writes the same id, and the run may already have started)
if ARGV[6] == '1' then redis.call('DEL', KEYS[1]) end
if ARGV[6] == 'new' and redis.call('EXISTS', KEYS[1]) == 1 then return end
redis.call('HSET', KEYS[1], 'status', 'PENDING', 'task', ARGV[1], 'queue', ARGV[2],
           'submitted_at', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'eta', ARGV[5]) end
if ARGV[7] and ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'then', ARGV[7]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
