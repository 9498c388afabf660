//! The queue's Lua scripts. Each touches only keys of one queue (one hash tag), reads the
//! clock from Redis (`TIME`) so producers and consumers never compare different clocks, and
//! works in batches whose size the caller bounds: nothing here `unpack`s an unbounded list.

use std::sync::LazyLock;

use redis::Script;

/// Separates the uniqueness prefix (a UUIDv7) from the payload in a delayed-set member.
pub(crate) const MEMBER_SEP: char = '|';

/// `KEYS[1]` delayed ZSET; `ARGV[1]` delay in ms, `ARGV[2]` member. Returns the due time (ms).
pub(crate) static ENQUEUE_AFTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = now + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, ARGV[2])
return due
"#,
    )
});

/// `KEYS[1]` delayed ZSET, `KEYS[2]` stream; `ARGV[1]` batch size. Moves up to a batch of due
/// members to the stream; returns `{moved, ms until the next due member or -1}`.
pub(crate) static PROMOTE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  local payload = member
  if sep then payload = string.sub(member, sep + 1) end
  redis.call('XADD', KEYS[2], '*', 'p', payload)
  redis.call('ZREM', KEYS[1], member)
end
local wait = -1
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then
  wait = math.max(0, tonumber(nxt[2]) - now)
end
return {#due, wait}
"#,
    )
});

/// `KEYS[1]` stream, `KEYS[2]` dead-letter stream; `ARGV`: group, consumer, min idle ms,
/// batch size, max deliveries, dead-letter MAXLEN. Takes up to a batch of entries idle for
/// min idle (any owner): those already delivered max times go to the dead-letter stream and
/// are acked and deleted, the rest are claimed by `consumer`. Returns
/// `{{{id, payload, deliveries}, ...}, dead-lettered count}`.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function payload_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then return fields[i + 1] end
  end
  return ''
end
local group, me, min_idle = ARGV[1], ARGV[2], ARGV[3]
local max = tonumber(ARGV[5])
local pending = redis.call('XPENDING', KEYS[1], group, 'IDLE', min_idle, '-', '+', tonumber(ARGV[4]))
local claimed = {}
local dead = 0
for _, p in ipairs(pending) do
  local id, owner, n = p[1], p[2], p[4]
  if n >= max then
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if e[1] then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
        'p', payload_of(e[1][2]), 'id', id, 'deliveries', n, 'consumer', owner,
        'reason', 'max_deliveries')
      dead = dead + 1
    end
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
  else
    local c = redis.call('XCLAIM', KEYS[1], group, me, min_idle, id)
    if c[1] then
      table.insert(claimed, {id, payload_of(c[1][2]), n + 1})
    end
  end
end
return {claimed, dead}
"#,
    )
});

/// `KEYS[1]` stream; `ARGV`: group, consumer, idle ms to set, then entry ids. Re-claims to
/// `consumer` (JUSTID: no delivery-count bump) each id it still owns, setting its idle time:
/// 0 renews the lease, min idle releases the entry for immediate reclaim. Entries another
/// consumer took meanwhile are left alone. Returns how many ids were still owned.
pub(crate) static CLAIM_OWN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local group, me, idle = ARGV[1], ARGV[2], ARGV[3]
local owned = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1, me)
  if p[1] then
    redis.call('XCLAIM', KEYS[1], group, me, 0, id, 'IDLE', idle, 'JUSTID')
    owned = owned + 1
  end
end
return owned
"#,
    )
});
