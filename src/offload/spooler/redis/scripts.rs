//! The Lua scripts that change a queue: each runs atomically on the server, so two spoolers
//! never lease the same task and a task is never half moved. Every script gets every key of
//! the queue, in the order of [`super::url::Keys::all`]; times are the server's (`TIME`), so
//! hosts with skewed clocks agree on heartbeats and on `at`.

/// The KEYS indexes, named (Lua arrays start at 1).
const PRELUDE: &str = r"
local READY, DELAYED, TASKS, ATTEMPTS, SCORES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local LEASED, HEARTBEATS, WAKE, SEQ, DEAD, DEAD_WHY = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local ENQUEUED, ENQUEUED_AT = KEYS[12], KEYS[13]
local t = redis.call('TIME')
local now = tonumber(t[1])
local now_ms = now * 1000 + math.floor(tonumber(t[2]) / 1000)
local function wake()
  redis.call('LPUSH', WAKE, '1')
  redis.call('LTRIM', WAKE, 0, 255)
end
local function make_ready(id)
  redis.call('ZREM', DELAYED, id)
  redis.call('ZADD', READY, redis.call('HGET', SCORES, id) or '+inf', id)
end
";

/// ARGV: packet, priority score (`+inf` without one), `at` (0: none), a token unique to this
/// enqueue. Returns the new id, or the id the same token already created (the caller tries
/// again when a reply is lost: the task must not be added twice). Tokens are kept a minute:
/// the retry comes at once, and at 1000 enqueues a second that is 60k small entries.
pub const ENQUEUE: &str = r"
local old = redis.call('ZRANGEBYSCORE', ENQUEUED_AT, '-inf', '(' .. (now - 60), 'LIMIT', 0, 100)
for _, t in ipairs(old) do
  redis.call('HDEL', ENQUEUED, t)
  redis.call('ZREM', ENQUEUED_AT, t)
end
local known = redis.call('HGET', ENQUEUED, ARGV[4])
if known then return known end
local id = string.format('%020d', redis.call('INCR', SEQ))
redis.call('HSET', ENQUEUED, ARGV[4], id)
redis.call('ZADD', ENQUEUED_AT, now, ARGV[4])
redis.call('HSET', TASKS, id, ARGV[1])
redis.call('HSET', SCORES, id, ARGV[2])
local at = tonumber(ARGV[3])
if at > now then
  redis.call('ZADD', DELAYED, at, id)
else
  redis.call('ZADD', READY, ARGV[2], id)
end
wake()
return id
";

/// ARGV: consumer, heartbeat timeout (ms). Beats for the consumer; gives it back a lease it
/// already holds (a consumer asks only when it holds none, so that lease's reply was lost:
/// Redis died or the connection broke after the script ran, and the beating consumer would
/// otherwise keep a task nobody runs); puts back the leases of consumers whose last beat is
/// older than the timeout (an attempt each: their run failed); moves the delayed tasks whose
/// time has come to `ready`; leases the first ready one.
/// Returns `{id, packet, attempts}`, or `{'', seconds until the next delayed task or -1}`.
pub const LEASE: &str = r"
local me = ARGV[1]
redis.call('ZADD', HEARTBEATS, now_ms, me)
local held = redis.call('HGETALL', LEASED)
for i = 1, #held, 2 do
  if held[i + 1] == me then
    local id = held[i]
    local packet = redis.call('HGET', TASKS, id)
    if packet then
      return {id, packet, tonumber(redis.call('HGET', ATTEMPTS, id) or '0')}
    end
    redis.call('HDEL', LEASED, id)
  end
end
local dead = redis.call('ZRANGEBYSCORE', HEARTBEATS, '-inf', '(' .. (now_ms - tonumber(ARGV[2])))
if #dead > 0 then
  local is_dead = {}
  for _, c in ipairs(dead) do is_dead[c] = true end
  local leased = redis.call('HGETALL', LEASED)
  for i = 1, #leased, 2 do
    local id = leased[i]
    if is_dead[leased[i + 1]] then
      redis.call('HDEL', LEASED, id)
      if redis.call('HEXISTS', TASKS, id) == 1 then
        redis.call('HINCRBY', ATTEMPTS, id, 1)
        make_ready(id)
      end
    end
  end
  for _, c in ipairs(dead) do redis.call('ZREM', HEARTBEATS, c) end
end
local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(due) do make_ready(id) end
while true do
  local top = redis.call('ZPOPMIN', READY)
  if #top == 0 then break end
  local id = top[1]
  local packet = redis.call('HGET', TASKS, id)
  -- An id without a packet was acknowledged while queued again (a lease given up for dead
  -- whose spooler finished after all): nothing to run.
  if packet then
    redis.call('HSET', LEASED, id, me)
    return {id, packet, tonumber(redis.call('HGET', ATTEMPTS, id) or '0')}
  end
end
local nxt = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
if #nxt == 0 then return {'', -1} end
return {'', math.max(0, tonumber(nxt[2]) - now)}
";

/// ARGV: id. The task is done, by whoever ran it: forget it.
pub const ACK: &str = r"
local id = ARGV[1]
redis.call('HDEL', LEASED, id)
redis.call('HDEL', TASKS, id)
redis.call('HDEL', ATTEMPTS, id)
redis.call('HDEL', SCORES, id)
redis.call('ZREM', READY, id)
redis.call('ZREM', DELAYED, id)
return 1
";

/// ARGV: consumer, id, not-before (unix time). Returns 0 when the lease is no longer the
/// consumer's (given up for dead, and queued or run again): then the task is left alone.
pub const RETRY: &str = r"
local id = ARGV[2]
if redis.call('HGET', LEASED, id) ~= ARGV[1] then return 0 end
redis.call('HDEL', LEASED, id)
redis.call('HINCRBY', ATTEMPTS, id, 1)
local nb = tonumber(ARGV[3])
if nb > now then
  redis.call('ZADD', DELAYED, nb, id)
else
  make_ready(id)
  wake()
end
return 1
";

/// ARGV: consumer, id, why. Returns 0 when the lease is no longer the consumer's.
pub const BURY: &str = r"
local id = ARGV[2]
if redis.call('HGET', LEASED, id) ~= ARGV[1] then return 0 end
redis.call('HDEL', LEASED, id)
redis.call('HINCRBY', ATTEMPTS, id, 1)
redis.call('RPUSH', DEAD, id)
redis.call('HSET', DEAD_WHY, id, ARGV[3])
return 1
";

/// ARGV: consumer. Records that it is alive.
pub const HEARTBEAT: &str = r"
redis.call('ZADD', HEARTBEATS, now_ms, ARGV[1])
return 1
";

/// No ARGV. The ids waiting: ready ones in the order they will run, then delayed ones by time.
pub const PENDING: &str = r"
local ids = redis.call('ZRANGE', READY, 0, -1)
for _, id in ipairs(redis.call('ZRANGE', DELAYED, 0, -1)) do table.insert(ids, id) end
return ids
";

/// ARGV: id. An operator's re-queue of a buried task (from tests and the README's recipe):
/// back to `ready` with its attempts reset. Returns 0 when `id` is not buried.
pub const REQUEUE_DEAD: &str = r"
local id = ARGV[1]
if redis.call('LREM', DEAD, 1, id) == 0 then return 0 end
redis.call('HDEL', DEAD_WHY, id)
redis.call('HDEL', ATTEMPTS, id)
make_ready(id)
wake()
return 1
";

/// The full text of `body`: the prelude, then the body.
#[must_use]
pub fn source(body: &str) -> String {
    format!("{PRELUDE}{body}")
}
