-- task events: send a batch of notes (events.py). Counters arrive summed, so a
-- batch of many tasks costs one HINCRBY per field, not one per task.
-- KEYS[1]  the events stream
-- KEYS[2]  the counters hash
-- KEYS[3]  this 5-second slice's hash of tasks per state
-- ARGV[1]  the stream's length (0 = no events, counters only)
-- ARGV[2]  the slice's TTL (seconds)
-- ARGV[3]  the batch as JSON: {events = list of flat field/value lists,
--          counts = {counter field: increment}, sums = {counter field: seconds},
--          slice = {state: increment}}
local maxlen = tonumber(ARGV[1])
local batch = cjson.decode(ARGV[3])
if maxlen > 0 then
  for _, event in ipairs(batch.events) do
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(event))
  end
end
for field, n in pairs(batch.counts) do redis.call('HINCRBY', KEYS[2], field, n) end
for field, x in pairs(batch.sums) do redis.call('HINCRBYFLOAT', KEYS[2], field, x) end
for state, n in pairs(batch.slice) do redis.call('HINCRBY', KEYS[3], state, n) end
redis.call('EXPIRE', KEYS[3], ARGV[2])
