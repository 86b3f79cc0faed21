-- Shared LLM concurrency cap: a counting semaphore with leases and a FIFO queue of waiters.
--
-- One script, one atomic step per call; times come from the Redis clock (TIME), so the
-- callers' clocks never matter. Mirrors shared/llm/concurrency.py.
--
-- KEYS[1] holders   {p:cc:key}:h  zset holder id -> lease expiry (ms, Redis clock)
-- KEYS[2] queue     {p:cc:key}:q  zset waiter id -> arrival (us): the order slots go in
-- KEYS[3] queue ttl {p:cc:key}:qx zset waiter id -> expiry (ms): a waiter that stops
--                                 asking (killed) leaves the queue when it passes
--
-- ARGV[1] op: "acquire" | "renew" | "release"
-- acquire: ARGV[2] id, [3] limit, [4] lease ms, [5] waiter lease ms
--   returns {1, holders} when `id` now holds a slot (or already held one: its lease is
--   renewed), else {0, position in the queue (0 = next), holders}
-- renew:   ARGV[2] id, [3] lease ms; returns {1} if `id` still held its slot, else {0}
-- release: ARGV[2] id; gives up a slot or a place in the queue; returns {1}
--
-- Expired holders (a killed process stops renewing) and expired waiters are dropped at the
-- start of every acquire, so their slots come back within one lease. Every key expires on
-- its own after a few leases without traffic.

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local H, Q, QX = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[2]

local function touch(ttl_ms)
  for _, k in ipairs({H, Q, QX}) do
    redis.call('PEXPIRE', k, ttl_ms)
  end
end

if op == 'release' then
  redis.call('ZREM', H, id)
  redis.call('ZREM', Q, id)
  redis.call('ZREM', QX, id)
  return {1}
end

if op == 'renew' then
  local lease = tonumber(ARGV[3])
  if redis.call('ZSCORE', H, id) then
    redis.call('ZADD', H, now_ms + lease, id)
    touch(lease * 4)
    return {1}
  end
  return {0}
end

-- acquire
local limit = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local waiter_lease = tonumber(ARGV[5])

redis.call('ZREMRANGEBYSCORE', H, '-inf', now_ms)
local gone = redis.call('ZRANGEBYSCORE', QX, '-inf', now_ms)
for _, w in ipairs(gone) do
  redis.call('ZREM', Q, w)
end
redis.call('ZREMRANGEBYSCORE', QX, '-inf', now_ms)

local ttl = math.max(lease, waiter_lease) * 4
if redis.call('ZSCORE', H, id) then
  redis.call('ZADD', H, now_ms + lease, id)
  touch(ttl)
  return {1, redis.call('ZCARD', H)}
end

local holders = redis.call('ZCARD', H)
if not redis.call('ZSCORE', Q, id) then
  redis.call('ZADD', Q, now_us, id)
end
redis.call('ZADD', QX, now_ms + waiter_lease, id)
local position = redis.call('ZRANK', Q, id)
touch(ttl)
if position < limit - holders then
  redis.call('ZREM', Q, id)
  redis.call('ZREM', QX, id)
  redis.call('ZADD', H, now_ms + lease, id)
  return {1, holders + 1}
end
return {0, position, holders}
