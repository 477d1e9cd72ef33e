//! The Lua scripts that make each operation atomic on the server.
//!
//! Layout per election `E` with prefix `P` (all keys share the hash tag `{E}`, so every script
//! touches one Redis Cluster slot; election names cannot contain braces):
//!
//! - `P:{E}:lease`: a hash `{holder, term}` with a `PX` expiry: the live lease. Expiry is the
//!   server's own clock.
//! - `P:{E}:term`: the term counter, a string integer without expiry, kept across releases.
//! - `P:{E}:released`: the pub/sub channel a release publishes on.

/// Shared by every script: reads and validates the lease hash at `key`. Returns `nil` when the
/// key does not exist, `{bad = why}` when it holds something elect did not write.
const READ_LEASE: &str = r#"
local function read_lease(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind ~= 'hash' then return {bad = 'holds a ' .. kind .. ', not a lease hash'} end
  local f = redis.call('HMGET', key, 'holder', 'term')
  if not f[1] then return {bad = 'has no holder field'} end
  if not f[2] or not string.match(f[2], '^[1-9][0-9]*$') then
    return {bad = 'has no valid term field'}
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then return {bad = 'has no expiry'} end
  return {holder = f[1], term = f[2], pttl = pttl}
end
"#;

/// KEYS: lease, term counter, quarantine mark. ARGV: candidate, ttl ms, quarantine ('1' or '0').
/// `{'granted', term}` | `{'held', holder, term, pttl}` | `{'quarantined', ms}` |
/// `{'corrupt', key, why}`.
///
/// With the quarantine on, a vacant lease is not granted until a TTL has passed since the
/// first request after the server (re)started (a mark kept in memory, so a restart loses it
/// with the lease): its previous holder may still believe for up to one TTL.
///
/// A missing counter (fresh election, or data lost: a restart without persistence, FLUSHALL)
/// restarts from the server's clock in microseconds. Every earlier term was handed out by this
/// server at least a microsecond apart and no later than its clock said, so the floor is above
/// all of them — as long as the server's clock does not go back across the loss.
const ACQUIRE: &str = r#"
local l = read_lease(KEYS[1])
if l then
  if l.bad then return {'corrupt', KEYS[1], l.bad} end
  if l.holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {'granted', l.term}
  end
  return {'held', l.holder, l.term, l.pttl}
end
if ARGV[3] == '1' then
  -- INFO's uptime counts whole seconds of a cached clock: the true uptime is above up - 1.
  -- Past ceil(TTL) + 1 on that counter the server has surely been up for a TTL.
  local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
  local ttl = tonumber(ARGV[2])
  if up == nil or up <= math.ceil(ttl / 1000) then
    -- The first request after the (re)start marks the time, in memory only: a restart loses
    -- the mark with the lease. The mark is no earlier than the restart, so waiting a TTL
    -- from it is safe, and it is precise to the microsecond.
    local now = redis.call('TIME')
    local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
    local mark = tonumber(redis.call('GET', KEYS[3]))
    if mark == nil then
      -- The start was before now - (up - 1) s: moving the mark back that far keeps it after
      -- the start and spares candidates that reconnect late most of their wait.
      local back = 0
      if up then back = math.max(0, up - 1) end
      mark = now_us - back * 1000000
      redis.call('SET', KEYS[3], string.format('%.0f', mark))
    end
    local left = math.ceil((mark + ttl * 1000 - now_us) / 1000)
    if left > 0 then return {'quarantined', left} end
  end
end
local term
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind == 'none' then
  local now = redis.call('TIME')
  term = string.format('%.0f', tonumber(now[1]) * 1000000 + tonumber(now[2]))
  redis.call('SET', KEYS[2], term)
else
  local n = redis.pcall('INCR', KEYS[2])
  if type(n) ~= 'number' then
    return {'corrupt', KEYS[2], 'the term counter is not an integer below 2^63'}
  end
  term = redis.call('GET', KEYS[2])
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'term', term)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'granted', term}
"#;

/// KEYS: lease. ARGV: holder, term, ttl ms. `{'renewed'}` | `{'lost'}` | `{'corrupt', key, why}`.
const RENEW: &str = r#"
local l = read_lease(KEYS[1])
if not l then return {'lost'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
if l.holder ~= ARGV[1] or l.term ~= ARGV[2] then return {'lost'} end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'renewed'}
"#;

/// KEYS: lease. ARGV: holder, term, channel. `{'released'}` | `{'not_held'}` |
/// `{'corrupt', key, why}`. Publishes on the channel when it releases.
const RELEASE: &str = r#"
local l = read_lease(KEYS[1])
if not l then return {'not_held'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
if l.holder ~= ARGV[1] or l.term ~= ARGV[2] then return {'not_held'} end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], 'released')
return {'released'}
"#;

/// KEYS: lease. `{'none'}` | `{'held', holder, term, pttl}` | `{'corrupt', key, why}`.
const LEADER: &str = r#"
local l = read_lease(KEYS[1])
if not l then return {'none'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
return {'held', l.holder, l.term, l.pttl}
"#;

/// One script: its source and, once loaded, its SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    pub(crate) source: String,
    pub(crate) sha: std::sync::OnceLock<String>,
}

impl Script {
    fn new(name: &'static str, body: &str) -> Script {
        Script {
            name,
            source: format!("{READ_LEASE}{body}"),
            sha: std::sync::OnceLock::new(),
        }
    }
}

/// All scripts.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) leader: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            acquire: Script::new("acquire", ACQUIRE),
            renew: Script::new("renew", RENEW),
            release: Script::new("release", RELEASE),
            leader: Script::new("leader", LEADER),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 4] {
        [&self.acquire, &self.renew, &self.release, &self.leader]
    }
}
