-- fetch: move the oldest messages of the highest priorities of one queue into a
-- child's in-flight list for it. A child takes no more than its fair share of
-- what waits in a list, so a shallow queue is spread over the children rather
-- than hoarded by one; one EXISTS skips the priority lists when all are empty.
-- A list gives its part in two commands (RPOP with a count, LPUSH), not one per message.
-- KEYS[1]      the child's in-flight list for this queue
-- KEYS[2..10]  the queue's lists for priorities 9 down to 1
-- KEYS[11]     the queue's own list (priority 0)
-- ARGV[1]      how many messages to take at most
-- ARGV[2]      how many children share the work
-- ARGV[3]      now (Unix seconds), for the starts below
-- ARGV[4]      '' or, on a single Redis, which taken messages to start at once, as
--              start.lua would (``start`` below is its text): JSON {worker, ttl,
--              record = [the text before a task id in its record's key, after it],
--              show = {task name: the status to show}, call = whether to keep the
--              message in the record (result_extended)}, the child's acks-late tasks
--              without a rate limit. A message with an ``expires``, or one that does
--              not decode, is left for the child to start.
-- Returns the messages taken, in the order to run them; with ARGV[4], {those
-- messages, per message false (not started) or {what start.lua answered}}; or,
-- when the in-flight list is not empty (a lost answer left messages there: the
-- caller holds nothing between batches), its length.
local held = redis.call('LLEN', KEYS[1])
if held > 0 then return held end
local want, share, taken = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
local function take_from(list)
  local waiting = redis.call('LLEN', list)
  if waiting == 0 then return end
  local count = math.min(want - #taken, math.max(1, math.floor(waiting / share)))
  if count <= 0 then return end
  local popped = redis.call('RPOP', list, count)  -- the oldest first
  redis.call('LPUSH', KEYS[1], unpack(popped))
  for _, raw in ipairs(popped) do taken[#taken + 1] = raw end
end
if redis.call('EXISTS', unpack(KEYS, 2, 10)) > 0 then
  for i = 2, 10 do take_from(KEYS[i]) end
end
take_from(KEYS[11])
if ARGV[4] == '' then return taken end
local spec, started = cjson.decode(ARGV[4]), {}
for i, raw in ipairs(taken) do
  started[i] = false
  local decoded, message = pcall(cjson.decode, raw)
  if decoded and type(message) == 'table' and type(message.id) == 'string'
      and message.id ~= '' and type(message.task) == 'string'
      and spec.show[message.task] ~= nil and message.expires == nil then
    local record = spec.record[1] .. message.id .. spec.record[2]
    local ok, answer = pcall(start, {record}, {spec.worker, ARGV[3], spec.ttl, '1',
                                             spec.show[message.task],
                                             spec.call and raw or '', KEYS[1]})
    if ok then started[i] = {answer} end
  end
end
return {taken, started}
