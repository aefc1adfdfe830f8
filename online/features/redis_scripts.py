"""The Lua scripts of the Redis feature store: each call is one round trip and one atomic step on the server."""

from __future__ import annotations

import hashlib

__all__ = [
    "CAS_SCRIPT",
    "CAS_SHA",
    "ONLINE_READ_SCRIPT",
    "ONLINE_READ_SHA",
    "READ_SCRIPT",
    "READ_SHA",
    "UPGRADE_SCRIPT",
    "WRITE_SCRIPT",
    "WRITE_SHA",
]

# The fast half of the decision table (online/features/store.py's docstring), per entity on its batch record
# (online/features/redis_layout.py): nothing stored, or every stored feature older than every incoming one →
# written; every stored one newer → stale; the same record → unchanged. Anything else (equal times with
# other values, mixed times, another feature set) is left to the client, which decides feature by feature and
# writes the result only if the record is still the one it read (CAS_SCRIPT).
# KEYS: the entities' record keys. ARGV: the incoming records' feature count, their names line, then per entity
# its record. Returns: written, unchanged, stale (per entity × feature), then (entity index, stored record) of
# each entity left to the client.
#
# Its cost is the strings crossing into and out of Lua (each ARGV string, each reply element, each argument of a
# redis.call), not the decisions: one record per entity is 2 strings in and a GET and a SET out, where a hash
# of 8 features with their times was 17 in and an HSET of 17 pairs (docs/online_features.md, Writes).
WRITE_SCRIPT = """
local nf = tonumber(ARGV[1])
local names = ARGV[2]
local written, unchanged, stale = 0, 0, 0
local result = {0, 0, 0}
local find, sub = string.find, string.sub
for i = 1, #KEYS do
  local new = ARGV[2 + i]
  local old = redis.call('GET', KEYS[i])
  if not old then
    redis.call('SET', KEYS[i], new)
    written = written + nf
  elseif old == new then
    unchanged = unchanged + nf
  else
    local comma = find(old, ',', 1, true)
    local line = find(old, '\\n', comma, true)
    local line2 = find(old, '\\n', line + 1, true) or (#old + 1)
    local decided = false
    if line2 - line - 1 == #names and sub(old, line + 1, line2 - 1) == names then
      local new_comma = find(new, ',', 1, true)
      local new_line = find(new, '\\n', new_comma, true)
      if tonumber(sub(old, comma + 1, line - 1)) < tonumber(sub(new, 1, new_comma - 1)) then
        redis.call('SET', KEYS[i], new)
        written = written + nf
        decided = true
      elseif tonumber(sub(old, 1, comma - 1)) > tonumber(sub(new, new_comma + 1, new_line - 1)) then
        stale = stale + nf
        decided = true
      end
    end
    if not decided then
      result[#result + 1] = i - 1
      result[#result + 1] = old
    end
  end
end
result[1], result[2], result[3] = written, unchanged, stale
return result
"""
WRITE_SHA = hashlib.sha1(WRITE_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# The client's decisions, written only where the record is still the one it decided on (another writer may have
# written since). KEYS: records. ARGV: per key the record read ("" when there was none), then the one to write.
# Returns per key 1 (written) or 0 (changed meanwhile: read and decide again).
CAS_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local seen = redis.call('GET', KEYS[i]) or ''
  if seen == ARGV[2 * i - 1] then
    redis.call('SET', KEYS[i], ARGV[2 * i])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
CAS_SHA = hashlib.sha1(CAS_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# An entity hash of the previous layout (batch features as fields v:<feature> and t:<feature>) turned into a
# record (written only if the entity has none yet), its old fields removed; a hash left with only its "_" marker
# is deleted (window states, w:<p>, stay). The record is canonical (online/features/redis_layout.py), its
# features in the hash's field order. KEYS: per entity its hash, then its record key. Returns how many hashes
# held such fields.
UPGRADE_SCRIPT = """
local moved = 0
for i = 1, #KEYS, 2 do
  local flat = redis.call('HGETALL', KEYS[i])
  local value_of, names, times, drop = {}, {}, {}, {}
  for j = 1, #flat, 2 do
    local field = flat[j]
    local head = string.sub(field, 1, 2)
    if head == 'v:' then
      value_of[string.sub(field, 3)] = flat[j + 1]
      drop[#drop + 1] = field
    elseif head == 't:' then
      names[#names + 1] = string.sub(field, 3)
      times[#times + 1] = flat[j + 1]
      drop[#drop + 1] = field
    end
  end
  if #drop > 0 then
    if #names > 0 and redis.call('EXISTS', KEYS[i + 1]) == 0 then
      local low, high = 1, 1
      local values = {}
      for j = 1, #names do
        values[j] = value_of[names[j]] or ''
        if tonumber(times[j]) < tonumber(times[low]) then low = j end
        if tonumber(times[j]) > tonumber(times[high]) then high = j end
      end
      local lines = {times[low] .. ',' .. times[high], table.concat(names, ','), table.concat(values, ',')}
      if tonumber(times[low]) ~= tonumber(times[high]) then
        lines[4] = table.concat(times, ',')
      end
      redis.call('SET', KEYS[i + 1], table.concat(lines, '\\n'))
    end
    redis.call('HDEL', KEYS[i], unpack(drop))
    if redis.call('HLEN', KEYS[i]) == 1 and redis.call('HEXISTS', KEYS[i], '_') == 1 then
      redis.call('DEL', KEYS[i])
    end
    moved = moved + 1
  end
end
return moved
"""

# Per entity its batch record, or when it has none: "!" if it has a hash (window states: it exists), "?" if that
# hash still holds a batch feature of the previous layout (ARGV[1], a t:<feature> field), else "".
READ_SCRIPT = """
local out = {}
for i = 1, #KEYS, 2 do
  local found = redis.call('GET', KEYS[i])
  if not found then
    local marks = redis.call('HMGET', KEYS[i + 1], '_', ARGV[1])
    found = marks[2] and '?' or (marks[1] and '!' or '')
  end
  out[#out + 1] = found
end
return out
"""
READ_SHA = hashlib.sha1(READ_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# A request's features in one call: per entity its batch record (GET) and ONE HMGET of its hash (the old-layout
# probe, then its window states), per other feature group key one HMGET of its window states. Returns, per
# entity, its record or READ_SCRIPT's marker ("!" only when the entity has no window state either: the hash
# exists); then per hash (the entities' hashes, then the group hashes) its non-empty window states joined by
# newlines (a JSON state never holds a raw newline).
# KEYS: per entity its record key and its hash, then the group hashes. ARGV: entity count, the old-layout probe
# field, the window columns.
ONLINE_READ_SCRIPT = """
local n = tonumber(ARGV[1])
local fields = {'_', ARGV[2]}
for j = 3, #ARGV do
  fields[j] = ARGV[j]
end
local windows = {}
for j = 3, #ARGV do
  windows[j - 2] = ARGV[j]
end
local nw = #windows
local out = {}
local states = {}
for i = 1, #KEYS - n do
  local row, first
  if i <= n then
    local found = redis.call('GET', KEYS[2 * i - 1])
    row = redis.call('HMGET', KEYS[2 * i], unpack(fields))
    if not found then
      found = row[2] and '?' or (row[1] and '!' or '')
    end
    out[i] = found
    first = 2
  elseif nw > 0 then
    row = redis.call('HMGET', KEYS[n + i], unpack(windows))
    first = 0
  end
  local parts = {}
  for j = 1, nw do
    local state = row and row[first + j]
    if state then
      parts[#parts + 1] = state
    end
  end
  states[i] = table.concat(parts, '\\n')
end
for i = 1, #states do
  out[n + i] = states[i]
end
return out
"""
ONLINE_READ_SHA = hashlib.sha1(ONLINE_READ_SCRIPT.encode(), usedforsecurity=False).hexdigest()
