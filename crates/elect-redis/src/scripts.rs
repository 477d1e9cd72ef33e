//! The Lua scripts that make each operation atomic on the server.
//!
//! Layout per election `E` with prefix `P` (all keys share the hash tag `{E}`, so every script
//! touches one Redis Cluster slot; election names cannot contain braces):
//!
//! - `P:{E}:lease`: a hash `{holder, nonce, term[, value]}` with a `PX` expiry: the live
//!   lease, with the value its holder published (absent: none). Expiry
//!   is the server's own clock. `nonce` tells apart claims with the same holder id (see
//!   `elect_core::Nonce`); a hash without one (written by elect 0.1.0) is nobody's claim.
//! - `P:{E}:term`: the term counter, a string integer without expiry, kept across releases.
//! - `P:{E}:started`, `P:{E}:master` (with the restart quarantine on): when the quarantine
//!   began (µs on the server's clock) and the replication id of the master the election was
//!   last requested on.
//! - `P:{E}:released`: the pub/sub channel a release and a new grant publish on (the name is
//!   kept from 0.1.0, when only releases did).

/// Shared by every script: reads and validates the lease hash at `key`. Returns `nil` when the
/// key does not exist, `{bad = why}` when it holds something elect did not write.
const READ_LEASE: &str = r#"
local function read_lease(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return nil end
  if kind ~= 'hash' then return {bad = 'it holds a ' .. kind .. ', not a lease hash'} end
  local f = redis.call('HMGET', key, 'holder', 'term', 'nonce', 'value')
  if not f[1] then return {bad = 'the lease hash has no holder field'} end
  if not f[2] or not string.match(f[2], '^[1-9][0-9]*$') then
    return {bad = 'the lease hash has no valid term field'}
  end
  local pttl = redis.call('PTTL', key)
  if pttl < 0 then return {bad = 'the lease hash has no expiry'} end
  return {holder = f[1], term = f[2], nonce = f[3] or '', pttl = pttl, value = f[4] or nil}
end
local function holds(l, holder, nonce)
  return l.holder == holder and l.nonce == nonce
end
"#;

/// KEYS: lease, term counter, quarantine mark, master identity. ARGV: candidate, nonce, ttl ms, quarantine ('1'
/// or '0'), channel, value, has value ('1' or '0'). `{'granted', term}` | `{'held', holder,
/// term, pttl[, value]}` | `{'quarantined', ms}` | `{'corrupt', key, why}`. A new grant publishes on the channel (observers learn of
/// the new leader at once); a holder's re-acquire does not.
///
/// With the quarantine on, a vacant lease is not granted until a TTL has passed since the
/// first request after the server (re)started (a mark kept in memory, so a restart loses it
/// with the lease), or since the first request on a master other than the one the election
/// was last requested on (a failover: `master_replid` changed): its previous holder may still
/// believe for up to one TTL.
///
/// Every new grant takes `max(counter + 1, server clock in µs)` and stores it in the counter.
/// The floor keeps terms rising when the counter is gone (a fresh election, or data lost: a
/// restart without persistence, FLUSHALL) or was lowered by a foreign write: every earlier
/// term was handed out by this server at least a microsecond apart and no later than its clock
/// said, so the floor is above all of them — as long as the server's clock does not go back.
const ACQUIRE: &str = r#"
local function acquire(KEYS, ARGV)
local l = read_lease(KEYS[1])
if l then
  if l.bad then return {'corrupt', KEYS[1], l.bad} end
  if holds(l, ARGV[1], ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {'granted', l.term}
  end
  return {'held', l.holder, l.term, l.pttl, l.value}
end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
if ARGV[4] == '1' then
  local ttl = tonumber(ARGV[3])
  local mark = tonumber(redis.call('GET', KEYS[3]))
  -- The master this election's last grant was made on (its replication id): a failover or a
  -- restart gives the serving master a new one. A promoted replica may have missed the last
  -- grant while its holder still believes, exactly as a restart without persistence forgets
  -- it: the first request on the new master marks the time, and nothing vacant is granted
  -- until a TTL after it.
  local id = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  local seen = redis.call('GET', KEYS[4])
  if id and seen and seen ~= id then
    mark = now_us
    redis.call('SET', KEYS[3], string.format('%.0f', mark))
  end
  if id and seen ~= id then redis.call('SET', KEYS[4], id) end
  -- INFO's uptime counts whole seconds of a cached clock: the true uptime is above up - 1.
  -- Past ceil(TTL) + 1 on that counter the server has surely been up for a TTL.
  local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)'))
  if mark == nil and (up == nil or up <= math.ceil(ttl / 1000)) then
    -- The first request after the (re)start marks the time, in memory only: a restart loses
    -- the mark with the lease. The mark is no earlier than the restart, so waiting a TTL
    -- from it is safe, and it is precise to the microsecond. The start was before
    -- now - (up - 1) s: moving the mark back that far keeps it after the start and spares
    -- candidates that reconnect late most of their wait.
    local back = 0
    if up then back = math.max(0, up - 1) end
    mark = now_us - back * 1000000
    redis.call('SET', KEYS[3], string.format('%.0f', mark))
  end
  if mark then
    local left = math.ceil((mark + ttl * 1000 - now_us) / 1000)
    if left > 0 then return {'quarantined', left} end
  end
end
local term = string.format('%.0f', now_us)
if redis.call('TYPE', KEYS[2])['ok'] ~= 'none' then
  local n = redis.pcall('INCR', KEYS[2])
  if type(n) ~= 'number' then
    return {'corrupt', KEYS[2], 'the term counter is not an integer below 2^63'}
  end
  -- n is exact below 2^53; above it, it is far above any clock floor, and GET is exact.
  if n > now_us then term = redis.call('GET', KEYS[2]) end
end
redis.call('SET', KEYS[2], term)
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'nonce', ARGV[2], 'term', term)
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[1], 'value', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'value')
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], 'granted')
return {'granted', term}
end
"#;

/// KEYS: lease. ARGV: holder, nonce, term, ttl ms. `{'renewed'}` | `{'lost'}` |
/// `{'corrupt', key, why}`.
const RENEW: &str = r#"
local function renew(KEYS, ARGV)
local l = read_lease(KEYS[1])
if not l then return {'lost'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
if not holds(l, ARGV[1], ARGV[2]) or l.term ~= ARGV[3] then return {'lost'} end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'renewed'}
end
"#;

/// The batch scripts: the function of the single script applied to each item in turn, with
/// `$N` keys and `$M` arguments per item (`$FN`, `$N`, `$M` spliced in by [`Scripts::new`]). Each
/// item's answer is the single script's reply, in the order of the items; an item decides
/// nothing for another (a corrupt record answers `corrupt` for its own item only).
const BATCH: &str = r#"
local out = {}
for i = 0, #KEYS / $N - 1 do
  local k, a = {}, {}
  for j = 1, $N do k[j] = KEYS[i * $N + j] end
  for j = 1, $M do a[j] = ARGV[i * $M + j] end
  out[i + 1] = $FN(k, a)
end
return out
"#;

/// KEYS: lease. ARGV: holder, nonce, term, channel. `{'released'}` | `{'not_held'}` |
/// `{'corrupt', key, why}`. Publishes on the channel when it releases.
const RELEASE: &str = r#"
local l = read_lease(KEYS[1])
if not l then return {'not_held'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
if not holds(l, ARGV[1], ARGV[2]) or l.term ~= ARGV[3] then return {'not_held'} end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[4], 'released')
return {'released'}
"#;

/// KEYS: lease. `{'none'}` | `{'held', holder, term, pttl[, value]}` | `{'corrupt', key, why}`.
const LEADER: &str = r#"
local l = read_lease(KEYS[1])
if not l then return {'none'} end
if l.bad then return {'corrupt', KEYS[1], l.bad} end
return {'held', l.holder, l.term, l.pttl, l.value}
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

    /// A script that defines `function` in `body` and calls it once.
    fn single(name: &'static str, body: &str, function: &str) -> Script {
        Script::new(name, &format!("{body}return {function}(KEYS, ARGV)\n"))
    }

    /// A script that defines `function` in `body` and calls it for each item of `keys` keys
    /// and `args` arguments.
    fn batch(name: &'static str, body: &str, function: &str, keys: usize, args: usize) -> Script {
        let each = BATCH
            .replace("$FN", function)
            .replace("$N", &keys.to_string())
            .replace("$M", &args.to_string());
        Script::new(name, &format!("{body}{each}"))
    }
}

/// Keys and arguments per item of the acquire script.
pub(crate) const ACQUIRE_KEYS: usize = 4;
pub(crate) const ACQUIRE_ARGS: usize = 7;
/// Keys and arguments per item of the renew script.
pub(crate) const RENEW_KEYS: usize = 1;
pub(crate) const RENEW_ARGS: usize = 4;

/// All scripts.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) renew: Script,
    pub(crate) release: Script,
    pub(crate) leader: Script,
    pub(crate) acquire_batch: Script,
    pub(crate) renew_batch: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            acquire: Script::single("acquire", ACQUIRE, "acquire"),
            renew: Script::single("renew", RENEW, "renew"),
            release: Script::new("release", RELEASE),
            leader: Script::new("leader", LEADER),
            acquire_batch: Script::batch(
                "acquire_batch",
                ACQUIRE,
                "acquire",
                ACQUIRE_KEYS,
                ACQUIRE_ARGS,
            ),
            renew_batch: Script::batch("renew_batch", RENEW, "renew", RENEW_KEYS, RENEW_ARGS),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 6] {
        [
            &self.acquire,
            &self.renew,
            &self.release,
            &self.leader,
            &self.acquire_batch,
            &self.renew_batch,
        ]
    }
}
