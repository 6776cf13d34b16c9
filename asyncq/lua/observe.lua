-- task events: send a batch of notes (events.py). Counters arrive summed, so a
-- batch of many tasks costs one HINCRBY per field, not one per task.
-- KEYS[1]  the events stream
-- KEYS[2]  the counters hash
-- KEYS[3]  this 5-second slice's hash of tasks per state
-- ARGV[1]  about how many events the stream keeps (0 = no events, counters only)
-- ARGV[2]  the slice's TTL (seconds)
-- ARGV[3]  the counters as JSON: {counts = {counter field: increment},
--          sums = {counter field: seconds}, slice = {state: increment}}
-- ARGV[4]  the batch's events, oldest first: a JSON array of objects ('' = none)
-- ARGV[5]  how many events ARGV[4] holds
-- The events go in one stream entry, field 'events'. A send of n events trims the
-- stream to about ARGV[1] / n entries: about ARGV[1] events while sends are alike.
-- (Exactly, when that is few entries: '~' trims only whole nodes of ~100 entries.)
-- A write that damaged data refuses (a counter that is not a number, a key of the
-- wrong type) loses its own note, never the rest of the batch; the readers
-- (monitor.py) skip the damaged entry and say so. Any other error (Redis out of
-- memory, say) ends the script, as it would without this. Returns the writes lost.
local DAMAGED = {'^WRONGTYPE', 'not an integer', 'not a float', 'overflow',
                 'last possible ID'}
local maxlen = tonumber(ARGV[1])
local batch = cjson.decode(ARGV[3])
local lost = 0
local function write(...)
  local answer = redis.pcall(...)
  if type(answer) ~= 'table' or not answer.err then return end
  for _, pattern in ipairs(DAMAGED) do
    if string.find(answer.err, pattern) then lost = lost + 1; return end
  end
  error(answer)
end
if maxlen > 0 and ARGV[4] ~= '' then
  local entries = math.max(1, math.floor(maxlen / tonumber(ARGV[5])))
  write('XADD', KEYS[1], 'MAXLEN', entries >= 1000 and '~' or '=', entries, '*',
        'events', ARGV[4])
end
for field, n in pairs(batch.counts) do write('HINCRBY', KEYS[2], field, n) end
for field, x in pairs(batch.sums) do write('HINCRBYFLOAT', KEYS[2], field, x) end
for state, n in pairs(batch.slice) do write('HINCRBY', KEYS[3], state, n) end
write('EXPIRE', KEYS[3], ARGV[2])
return lost
