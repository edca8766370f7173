#!lua name=tether
-- Tether's fleet functions: the decisions that must be atomic across hosts and need more
-- than one command, taken in the Redis Cluster slot of one device (or of one room, for its
-- sequence numbers). Keys of a device share the
-- hash tag {t:DEVICE}:
--   KEYS[1] route   (string: host, gw, session, tok, state, one per line; see keys.rs)
--   KEYS[2] msg     (the device's message id counter)
--   KEYS[3] pending (hash: message id -> "EXPIRES_UNIX_MS:PAYLOAD")
--   KEYS[4] ended   (the session an operator ended through another host, until the route's
--                    TTL would have passed: its host's next bind finds it and drops it)
--   KEYS[5] rooms   (the session's rooms and grants, for the host that takes it over)
-- A login needs no function: it is one SET ... GET of the route (NX under `refuse`), which
-- is atomic on its own (redis.rs). The functions publish nothing: the engine thread publishes
-- what their answers call for (a push for another host, a drop order) on the node the hosts
-- subscribe on (see bus.rs).

local FIELDS = { 'host', 'gw', 'session', 'tok', 'state' }

local function route_of(key)
  local value = redis.call('GET', key)
  if not value then
    return nil
  end
  local r, start = {}, 1
  for _, name in ipairs(FIELDS) do
    local stop = string.find(value, '\n', start, true)
    if stop then
      r[name] = string.sub(value, start, stop - 1)
      start = stop + 1
    else
      r[name] = string.sub(value, start)
      start = #value + 2
    end
  end
  return r
end

local function write_route(key, r, ttl_ms)
  local value = table.concat({ r.host, r.gw, r.session, r.tok, r.state }, '\n')
  redis.call('SET', key, value, 'PX', ttl_ms)
end

-- HOST holds SESSION, says a bind: whether an operator ended it meanwhile.
local function ended(keys, session)
  return keys[4] ~= nil and redis.call('GET', keys[4]) == session
end

local function claim(keys, host, gw, ttl_ms)
  write_route(keys[1], { host = host, gw = gw, session = '', tok = '', state = 'online' }, ttl_ms)
end

-- A resume on HOST of the session whose token hashes to TOK: ARGV device, host, gw, tok, ttl_ms.
-- Answers {'unknown'} or {'ok', previous host, its session, its rooms, pending pushes...}.
redis.register_function('tether_takeover', function(keys, args)
  local device, host, gw, tok, ttl = args[1], args[2], args[3], args[4], args[5]
  local r = route_of(keys[1])
  if not r or r.tok == '' or r.tok ~= tok then
    return { 'unknown' }
  end
  claim(keys, host, gw, ttl)
  local answer = { 'ok', r.host, r.session, redis.call('GET', keys[5]) or '' }
  for _, v in ipairs(redis.call('HGETALL', keys[3])) do
    answer[#answer + 1] = v
  end
  return answer
end)

-- HOST holds SESSION of DEVICE: ARGV device, host, gw, session, tok, state, ttl_ms, where
-- state is online, detached, or refresh (only the TTL, from the periodic sweep).
-- Answers {'ok' or 'recreated', pending pushes...} ('recreated': the route was gone, Redis
-- lost it, the host writes it again; the pushes: what arrived between a takeover and this
-- bind, for the host to queue), {'stale'} (another session of this host holds the device),
-- {'moved'} (another host holds the device now: the host drops its session), or {'ended'}
-- (an operator ended the session through another host: the host drops it).
redis.register_function('tether_bind', function(keys, args)
  local host, gw, session, tok, state, ttl = args[2], args[3], args[4], args[5], args[6], args[7]
  local r = route_of(keys[1])
  if not r and ended(keys, session) then
    return { 'ended' }
  end
  if r and r.host ~= host then
    return { 'moved' }
  end
  if r and r.session ~= '' and r.session ~= session then
    return { 'stale' }
  end
  if r and state == 'refresh' then
    redis.call('PEXPIRE', keys[1], ttl)
    redis.call('PEXPIRE', keys[5], ttl)
    return { 'ok' }
  end
  if state == 'refresh' then
    state = 'online'
  end
  write_route(keys[1], { host = host, gw = gw, session = session, tok = tok, state = state }, ttl)
  local answer = { r and 'ok' or 'recreated' }
  if state == 'online' then
    for _, v in ipairs(redis.call('HGETALL', keys[3])) do
      answer[#answer + 1] = v
    end
  end
  return answer
end)

-- HOST's SESSION of DEVICE ended: ARGV host, session. Its route and pushes go, if still its.
redis.register_function('tether_forget', function(keys, args)
  local host, session = args[1], args[2]
  local r = route_of(keys[1])
  if r and r.host == host and r.session == session then
    redis.call('DEL', keys[1], keys[3], keys[5])
    return 1
  end
  return 0
end)

-- A push from HOST: ARGV device, host, expires_unix_ms, payload, max_pending, id_floor,
-- pending_ttl_ms, counter_ttl_ms.
-- Answers {'offline'}, {'full', pending}, or {state, owner host, owner session, id}.
redis.register_function('tether_push', function(keys, args)
  local device, host, expires, payload = args[1], args[2], args[3], args[4]
  local max_pending, floor, pending_ttl, counter_ttl = tonumber(args[5]), args[6], args[7], args[8]
  local r = route_of(keys[1])
  if not r then
    return { 'offline' }
  end
  local pending = redis.call('HLEN', keys[3])
  if pending >= max_pending then
    return { 'full', pending }
  end
  local id = string.format('%.0f', redis.call('INCR', keys[2]))
  if #id < #floor or (#id == #floor and id < floor) then
    redis.call('SET', keys[2], floor)
    id = floor
  end
  redis.call('PEXPIRE', keys[2], counter_ttl)
  redis.call('HSET', keys[3], id, expires .. ':' .. payload)
  redis.call('PEXPIRE', keys[3], pending_ttl)
  return { r.state, r.host, r.session, id }
end)

-- An operator ends DEVICE's session through a host that does not hold it: ARGV ttl_ms. The
-- route and the durable pushes go at once (pushes answer offline, a RESUME anywhere fails);
-- the session is remembered as ended for ttl_ms so that its host drops it at its next bind
-- even if the bus message telling it to is lost. Answers {'none'} or
-- {state, host, session, pending pushes dropped}.
redis.register_function('tether_end', function(keys, args)
  local r = route_of(keys[1])
  if not r then
    return { 'none' }
  end
  local pending = redis.call('HLEN', keys[3])
  redis.call('DEL', keys[1], keys[3], keys[5])
  if r.session ~= '' then
    redis.call('SET', keys[4], r.session, 'PX', args[1])
  end
  return { r.state, r.host, r.session, pending }
end)

-- The next number of a room: KEYS its counter; ARGV floor (the wall clock in ms x 1024: a
-- counter that does not exist, new or lost, starts there, so numbers never go back). Answers
-- the number, as a string.
redis.register_function('tether_room_seq', function(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then
    redis.call('SET', keys[1], args[1])
    return args[1]
  end
  return string.format('%.0f', redis.call('INCR', keys[1]))
end)
