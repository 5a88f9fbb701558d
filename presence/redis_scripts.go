package presence

import "github.com/redis/go-redis/v9"

// The Lua scripts of the Redis engine. Each one touches the keys of one hash slot only
// (every key it names is in KEYS), so that they run unchanged on a Redis Cluster. Times
// come from redis.call('TIME'), never from a node, so that node clocks do not matter;
// Redis 7 replicates a script's effects, which makes TIME allowed before writes.
//
// A connection entry is owner name + "\n" + user id. Numbers handed to redis.call are
// small integers (counts, times in ms), which Lua formats without an exponent.

// nowMS is the Lua prelude that sets now to the server's time in milliseconds.
const nowMS = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// Add codes, as addScript returns them.
const (
	addFull     = -1 // a new user in a full channel: nothing recorded
	addOwned    = 0  // the connection is already this node's: nothing changed
	addTakeover = 1  // the connection was another name's and is now this node's
	addFirst    = 2  // recorded; the user was absent
	addMore     = 3  // recorded; the user was present
)

// addLua defines add(), which records a connection and returns its Add code.
// KEYS: users, conns, counts of the channel. ARGV: conn, user, info, max, name.
const addLua = `
local function add()
  local owner = redis.call('HGET', KEYS[2], ARGV[1])
  if owner then
    local nl = string.find(owner, '\n', 1, true) or (#owner + 1)
    if string.sub(owner, 1, nl - 1) == ARGV[5] then return 0 end
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[5] .. string.sub(owner, nl))
    return 1
  end
  local present = redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1
  if not present then
    local max = tonumber(ARGV[4])
    if max > 0 and redis.call('HLEN', KEYS[1]) >= max then return -1 end
    redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5] .. '\n' .. ARGV[2])
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
  if present then return 3 end
  return 2
end
`

// addScript records a connection and returns its Add code.
var addScript = redis.NewScript(addLua + `return add()`)

// joinScript records a connection and returns {code, returned, user, info, user, info,
// ...}: the channel's members as they are with the connection recorded (just {code}
// when full). When the user was absent (code 2) with a pending departure, the record is
// cleared and returned is 1 if it was within the departure grace, 2 if past it (the
// departure stood: the caller reports it).
// KEYS: users, conns, counts, departed of the channel. ARGV: as add's, then grace ms.
var joinScript = redis.NewScript(nowMS + addLua + `
local code = add()
if code < 0 then return {code} end
local returned = 0
if code == 2 then
  local t = redis.call('HGET', KEYS[4], ARGV[2])
  if t then
    redis.call('HDEL', KEYS[4], ARGV[2])
    if now - tonumber(t) <= tonumber(ARGV[6]) then returned = 1 else returned = 2 end
  end
end
local out = {code, returned}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
`)

// confirmDepartureScript settles a pending departure: 1 if it was still pending (no Join
// of the user cleared it: the departure stood). KEYS[1] is unused (kept for the slot).
// KEYS: users, departed of the channel. ARGV: user.
var confirmDepartureScript = redis.NewScript(`
return redis.call('HDEL', KEYS[2], ARGV[1])
`)

// Remove codes, as removeScript returns them (with the removed entry's owner name).
const (
	removeUnknown = 0 // no such connection of that user; the user is present
	removeLast    = 1 // removed; the user has no connection left
	removeMore    = 2 // removed; the user has other connections
	removeAbsent  = 3 // no such connection, and the user is not in the channel
)

// removeScript forgets a connection of a user. With ARGV[3] '1', the departure of a
// user left with no connection is recorded as pending (since now), for
// ConfirmDeparture; the departed hash lives ARGV[4] ms past its last write.
// KEYS: users, conns, counts, departed of the channel. ARGV: conn, user, mark, ttl ms.
var removeScript = redis.NewScript(nowMS + `
local owner = redis.call('HGET', KEYS[2], ARGV[1])
local nl = owner and string.find(owner, '\n', 1, true)
if not nl or string.sub(owner, nl + 1) ~= ARGV[2] then
  if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {0, ''} end
  return {3, ''}
end
local name = string.sub(owner, 1, nl - 1)
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) > 0 then return {2, name} end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[4], ARGV[2], now)
  redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[4]))
end
return {1, name}
`)

// cleanChannelScript removes every connection of a dead node name from one channel and
// returns the users left with none. Running it again finds nothing.
// KEYS: users, conns, counts of the channel. ARGV: name.
var cleanChannelScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[2])
local p = ARGV[1] .. '\n'
local gone = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  if string.sub(v, 1, #p) == p then
    local user = string.sub(v, #p + 1)
    redis.call('HDEL', KEYS[2], all[i])
    if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
      redis.call('HDEL', KEYS[3], user)
      redis.call('HDEL', KEYS[1], user)
      gone[#gone + 1] = user
    end
  end
end
return gone
`)

// setSubsScript sets a node's counts for channels of one app and moves the totals by
// the differences. It returns channel, kind, total triples for the channels whose node
// count changed: kind 1 when the total went from zero to more (2 when within the grace
// of the channel's pending vacancy, which it clears; 3 when past it: the vacancy stood
// and the caller reports it), 0 when it went back to zero
// (recorded as a pending vacancy since now), -1 otherwise; total is the new total.
// Atomic per call, so each transition has exactly one reporter.
// KEYS: totals of the app, the node's counts for the app, the app's pending vacancies.
// ARGV: grace ms, ttl ms, then channel, count, ...
var setSubsScript = redis.NewScript(nowMS + `
local grace, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local ch = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[2], ch) or '0')
  if n ~= old then
    if n == 0 then redis.call('HDEL', KEYS[2], ch) else redis.call('HSET', KEYS[2], ch, ARGV[i + 1]) end
    local after = redis.call('HINCRBY', KEYS[1], ch, n - old)
    local before = after - (n - old)
    if after <= 0 then redis.call('HDEL', KEYS[1], ch) end
    local kind = -1
    if before <= 0 and after > 0 then
      kind = 1
      local t = redis.call('HGET', KEYS[3], ch)
      if t then
        redis.call('HDEL', KEYS[3], ch)
        if now - tonumber(t) <= grace then kind = 2 else kind = 3 end
      end
    elseif before > 0 and after <= 0 then
      redis.call('HSET', KEYS[3], ch, now)
      redis.call('PEXPIRE', KEYS[3], ttl)
      kind = 0
    end
    out[#out + 1] = ch
    out[#out + 1] = kind
    out[#out + 1] = math.max(after, 0)
  end
end
return out
`)

// confirmVacatedScript settles a pending vacancy: 1 if it was still pending (no
// occupation cleared it: the vacancy stood). KEYS[1] is unused (kept for the slot).
// KEYS: totals of the app, the app's pending vacancies. ARGV: channel.
var confirmVacatedScript = redis.NewScript(`
return redis.call('HDEL', KEYS[2], ARGV[1])
`)

// cleanAppScript takes a dead node's counts for one app out of the totals, deletes
// them, and returns the channels whose total went to zero. Running it again finds
// nothing.
// KEYS: totals of the app, the dead node's counts for the app.
var cleanAppScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[2])
local out = {}
for i = 1, #all, 2 do
  local n = tonumber(all[i + 1])
  local after = redis.call('HINCRBY', KEYS[1], all[i], -n)
  if after <= 0 then
    redis.call('HDEL', KEYS[1], all[i])
    if after + n > 0 then out[#out + 1] = all[i] end
  end
end
redis.call('DEL', KEYS[2])
return out
`)

// registerScript adds a node name to the registry with a lease, unless (force not "1")
// a live node already has the same id.
// KEYS: nodes. ARGV: name, lease ms, id prefix ("<id>-"), force.
// Returns {1, now, holder, holder expiry, live names...} when registered (holder is ""
// unless forced over a live node of the same id) or {0, now, holder, holder expiry}.
var registerScript = redis.NewScript(nowMS + `
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'WITHSCORES')
local p = ARGV[3]
local holder, expiry = '', '0'
for i = 1, #live, 2 do
  if live[i] ~= ARGV[1] and string.sub(live[i], 1, #p) == p then
    holder, expiry = live[i], live[i + 1]
    if ARGV[4] ~= '1' then return {0, now, holder, expiry} end
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local out = {1, now, holder, expiry}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do out[#out + 1] = m end
return out
`)

// renewScript extends a node's lease, drops pch members it no longer needs, and lists
// the live nodes. It returns {0} when the node's name is no longer registered (it was
// taken for dead, or Redis lost its data): the node must not renew a name that others
// may be cleaning, and takes a new one.
// KEYS: nodes, the node's pch set. ARGV: name, lease ms, pch members to drop...
var renewScript = redis.NewScript(nowMS + `
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
for i = 3, #ARGV do redis.call('SREM', KEYS[2], ARGV[i]) end
local out = {1}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do out[#out + 1] = m end
return out
`)

// claimScript moves dead nodes (lease run out) from the registry to the claims, and
// renews claims that ran out (their sweeper died), so that exactly one caller cleans
// each; the claimers hash records who holds each claim, by node id (which, unlike the
// name, survives a re-registration). It also returns the claims the caller already
// holds: a claim whose reply was lost (the call timed out while Redis was frozen, and
// Redis ran it when it woke up) would otherwise wait claimTTL for another sweeper. And
// it takes over the claims of a claimer with no live name (its id is no live node's):
// a sweeper that died, or stopped, between its claim and its cleaning would otherwise
// leave the dead node's entries counted for claimTTL. (A claim taken over from a
// claimer that is only slow is cleaned twice, harmlessly: each entry is removed, and
// reported, once.) The caller's own name is never claimed by itself: a late renewal
// still saves it.
// KEYS: nodes, claims, claimers. ARGV: own name, claim ms, limit, own id.
var claimScript = redis.NewScript(nowMS + `
local until_ = now + tonumber(ARGV[2])
local out, seen = {}, {}
local function claim(m)
  redis.call('ZADD', KEYS[2], until_, m)
  redis.call('HSET', KEYS[3], m, ARGV[4])
  if not seen[m] then
    seen[m] = true
    out[#out + 1] = m
  end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  if m ~= ARGV[1] then
    redis.call('ZREM', KEYS[1], m)
    claim(m)
  end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  claim(m)
end
local held = redis.call('HGETALL', KEYS[3])
if #held > 0 then
  local live = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
    live[string.match(m, '^[^-]*')] = true
  end
  for i = 1, #held, 2 do
    local by = held[i + 1]
    if (by == ARGV[4] or not live[by]) and redis.call('ZSCORE', KEYS[2], held[i]) then claim(held[i]) end
  end
end
return out
`)
