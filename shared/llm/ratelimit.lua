-- Shared LLM rate limiter: GCRA reservations for requests/s and tokens/min, fair across jobs.
--
-- One script, one atomic step per call; all times come from the Redis clock (TIME), so the
-- callers' clocks never matter. Mirrors shared/llm/ratelimit.py (gcra_reserve, fair_cap).
--
-- KEYS[1] state hash  {p:key}:s   tat_r, tat_t (theoretical arrival times, s), pen (rate
--                                 factor after a 429), pen_until, hold_until
-- KEYS[2] active shares {p:key}:jobs  zset share -> last time it asked (a share is the unit
--                                 of fairness: a job's tenant, or the job)
-- KEYS[3] this share's {p:key}:o:<share> zset request id -> go time (outstanding reservations)
-- KEYS[4] this share's {p:key}:w:<share> string: next wake-up ticket for its waiters
-- KEYS[5] heavy shares {p:key}:heavy zset share -> last time it asked while heavy
-- KEYS[6] this share's {p:key}:u:<share> hash u (calls granted, decayed), t (when)
--
-- ARGV[1] op: "reserve" | "adjust" | "penalize" | "hold"
-- reserve:  ARGV[2] rps, [3] rps burst, [4] tokens/s (0 = off), [5] token burst, [6] cost
--           (tokens), [7] share, [8] request id, [9] horizon s, [10] active window s,
--           [11] max wait s, [12] free calls, [13] usage half-life s, [14] heavy weight,
--           [15] borrow s (a share over its part may still reserve while the schedule
--           reaches less than this far ahead)
--   returns {status, wait_us, n_active, cap, go_us, n_heavy}; status 0 = go after wait_us
--   (at go_us, Redis clock, microseconds since the epoch), 1 = the share is
--   over its fair share of the horizon: ask again after wait_us, 2 = the wait would exceed
--   max wait: nothing reserved, wait_us says when it would have gone
-- adjust:   ARGV[4] tokens/s, ARGV[6] delta tokens (actual - estimated); returns {0}
-- penalize: ARGV[2] retry-after s, ARGV[3] factor step, ARGV[4] min factor, ARGV[5] min
--           window s; at most one step per Retry-After window; returns {pen * 1e6}
-- hold:     ARGV[2] seconds nobody may start a call (and the schedule moves back by as
--           much); returns {0}

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
local S = KEYS[1]
local TTL_MS = 3600000

local function fmt(x)
  return string.format('%.6f', x)
end

local st = redis.call('HMGET', S, 'tat_r', 'tat_t', 'pen', 'pen_until', 'hold_until', 'pen_at')
local tat_r = tonumber(st[1]) or 0
local tat_t = tonumber(st[2]) or 0
local pen = tonumber(st[3]) or 1
local pen_until = tonumber(st[4]) or 0
local hold_until = tonumber(st[5]) or 0
local pen_at = tonumber(st[6]) or 0
local factor = 1
if pen_until > now then factor = pen end

if op == 'reserve' then
  local rps = tonumber(ARGV[2]) * factor
  local burst_r = tonumber(ARGV[3])
  local tps = tonumber(ARGV[4]) * factor
  local burst_t = tonumber(ARGV[5])
  local cost = tonumber(ARGV[6])
  local job = ARGV[7]
  local rid = ARGV[8]
  local horizon = tonumber(ARGV[9])
  local window = tonumber(ARGV[10])
  local max_wait = tonumber(ARGV[11])
  local free = tonumber(ARGV[12])
  local half = tonumber(ARGV[13])
  local heavy_w = tonumber(ARGV[14])
  local borrow = tonumber(ARGV[15]) or 0

  -- usage: the calls this share was granted, halving every `half` seconds
  local uh = redis.call('HMGET', KEYS[6], 'u', 't')
  local used = tonumber(uh[1]) or 0
  local used_at = tonumber(uh[2]) or now
  if now > used_at then used = used * 2 ^ (-(now - used_at) / half) end
  local heavy = used > free

  -- fairness: the shares active in the last `window` seconds divide the reservations
  -- that may be queued (horizon * rate) by weight: 1 for a light share, `heavy_w` for a
  -- heavy one (fair_weights in ratelimit.py)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  redis.call('ZADD', KEYS[2], now, job)
  redis.call('PEXPIRE', KEYS[2], math.ceil(window * 1000) + 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - window)
  if heavy then
    redis.call('ZADD', KEYS[5], now, job)
    redis.call('PEXPIRE', KEYS[5], math.ceil(window * 1000) + 1000)
  else
    redis.call('ZREM', KEYS[5], job)
  end
  local n = redis.call('ZCARD', KEYS[2])
  local nh = math.min(n, redis.call('ZCARD', KEYS[5]))
  local weight = 1
  if heavy then weight = heavy_w end
  local total = (n - nh) + nh * heavy_w
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  local out = redis.call('ZCARD', KEYS[3])
  local cap = math.max(1, math.floor(horizon * rps * weight / total))
  local T = 1 / rps
  -- Work-conserving: the parts only matter while the schedule is long. A share over its
  -- part may still take a slot while fewer than `borrow` seconds of reservations are
  -- queued, so what an active but quiet share leaves is not lost (a stage that asks in
  -- bursts, a job between two phases); a share that then asks waits at most that long
  -- more for its first slot.
  local queued = math.max(0, tat_r - now)
  if out >= cap and queued >= borrow then
    -- wake when enough of this share's own reservations have gone, or when the schedule
    -- is short enough to borrow again, whichever comes first; its waiters get tickets
    -- spaced by the share's part of the rate (by one slot when they wake to borrow), so
    -- they do not all ask at once
    local idx = out - cap
    local r = redis.call('ZRANGE', KEYS[3], idx, idx, 'WITHSCORES')
    local base = tonumber(r[2]) or now
    local spacing = T * total / weight
    if borrow > 0 and tat_r - borrow < base then
      base = tat_r - borrow
      spacing = T
    end
    local ticket = tonumber(redis.call('GET', KEYS[4])) or 0
    local at = math.max(base, ticket, now)
    redis.call('SET', KEYS[4], fmt(at + spacing), 'PX', math.ceil((at - now + horizon + 1) * 1000))
    return {1, math.floor((at - now) * 1000000), n, cap, 0, nh}
  end

  -- GCRA: a request of `cost` conforms at tat + (min(cost, burst) - burst) * interval
  local go = math.max(now, tat_r + (1 - burst_r) * T, hold_until)
  local Tt = 0
  if tps > 0 then
    Tt = 1 / tps
    go = math.max(go, tat_t + (math.min(cost, burst_t) - burst_t) * Tt)
  end
  if go - now > max_wait then
    return {2, math.floor((go - now) * 1000000), n, cap, 0, nh}
  end
  tat_r = math.max(tat_r, go) + T
  if tps > 0 then tat_t = math.max(tat_t, go) + cost * Tt end
  redis.call('HSET', S, 'tat_r', fmt(tat_r), 'tat_t', fmt(tat_t))
  redis.call('PEXPIRE', S, TTL_MS)
  if go > now then
    redis.call('ZADD', KEYS[3], go, rid)
    redis.call('PEXPIRE', KEYS[3], math.ceil((go - now + window) * 1000) + 1000)
  end
  -- forgotten once it has decayed to a few calls (ten half-lives after the last grant)
  redis.call('HSET', KEYS[6], 'u', fmt(used + 1), 't', fmt(now))
  redis.call('PEXPIRE', KEYS[6], math.ceil(half * 10000))
  return {0, math.floor((go - now) * 1000000), n, cap, math.floor(go * 1000000), nh}
elseif op == 'adjust' then
  local tps = tonumber(ARGV[4]) * factor
  local delta = tonumber(ARGV[6])
  if tps > 0 and delta ~= 0 then
    local Tt = 1 / tps
    if delta > 0 then
      tat_t = math.max(tat_t, now) + delta * Tt
    elseif tat_t > now then
      tat_t = math.max(now, tat_t + delta * Tt)
    end
    redis.call('HSET', S, 'tat_t', fmt(tat_t))
    redis.call('PEXPIRE', S, TTL_MS)
  end
  return {0}
elseif op == 'penalize' then
  local ra = math.max(tonumber(ARGV[2]), tonumber(ARGV[5]))
  local step = tonumber(ARGV[3])
  local min_factor = tonumber(ARGV[4])
  if pen_until > now then
    -- already slowed down: shrink further only once per Retry-After window, so a burst
    -- of 429s answered together does not collapse the rate
    if now - pen_at >= ra then
      pen = math.max(min_factor, pen * step)
      pen_at = now
    end
  else
    pen = step
    pen_at = now
  end
  pen_until = math.max(pen_until, now + ra)
  redis.call('HSET', S, 'pen', fmt(pen), 'pen_until', fmt(pen_until), 'pen_at', fmt(pen_at))
  redis.call('PEXPIRE', S, TTL_MS)
  return {math.floor(pen * 1000000)}
elseif op == 'hold' then
  -- the provider's window is exhausted: nobody starts before now + d, and the request
  -- schedule moves back by d, so the slots handed back let the provider's bucket refill
  -- even when reservations already reach far ahead
  local d = tonumber(ARGV[2])
  hold_until = math.max(hold_until, now + d)
  tat_r = math.max(tat_r, now) + d
  redis.call('HSET', S, 'hold_until', fmt(hold_until), 'tat_r', fmt(tat_r))
  redis.call('PEXPIRE', S, TTL_MS)
  return {0}
end
return redis.error_reply('unknown op ' .. tostring(op))
