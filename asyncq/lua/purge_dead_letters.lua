-- asyncq dead purge: remove the oldest N dead letters. New ones are LPUSHed at
-- the head, so the oldest N are the N an operator was shown and agreed to
-- delete; any that arrived meanwhile are kept.
-- KEYS[1]  the dead-letter list
-- ARGV[1]  how many of the oldest entries to remove (-1: all)
-- Returns {removed, left}.
local length = redis.call('LLEN', KEYS[1])
local n = tonumber(ARGV[1])
if n < 0 or n > length then n = length end
if n == length then
  redis.call('DEL', KEYS[1])
else
  redis.call('LTRIM', KEYS[1], 0, length - n - 1)
end
return {n, length - n}
