-- beat: advance a periodic entry's state and send its due run, in one step, only if
-- the state is still the one this scheduler read. Of several schedulers racing for
-- the same run, one wins: each run is sent once, and no lock is ever held.
-- KEYS[1]  the queue's beat hash (entry name -> state JSON)
-- KEYS[2]  the queue's list for the run's priority
-- ARGV[1]  the entry's name
-- ARGV[2]  the state this scheduler read ('' = none yet)
-- ARGV[3]  the entry's next state
-- ARGV[4]  the run's message ('' = only store the state)
-- ARGV[5]  how long to keep the hash at least (seconds)
-- Returns 1 if this call stored the state (and sent the run), 0 if another did.
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
if ARGV[4] ~= '' then
  redis.call('LPUSH', KEYS[2], ARGV[4])
end
return 1
