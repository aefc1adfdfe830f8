"""The Lua scripts of the Redis feature store: each call is one round trip and one atomic step on the server."""

from __future__ import annotations

import hashlib

__all__ = ["ONLINE_READ_SCRIPT", "ONLINE_READ_SHA", "READ_SCRIPT", "READ_SHA", "WRITE_SCRIPT", "WRITE_SHA"]

# Applied per entity and feature; the decision table is the one in online/features/store.py's docstring.
# ARGV: mode, feature count F, max examples, layout, F feature names, then per entity: with layout "shared" its
# one event time (µs) and its F values (a materialization: every feature of a row has the row's time); with
# layout "each", per feature its value and event time.
# Returns: written, unchanged, stale, corrected, rejected, then (entity index, feature index, stored value)
# of the first few rejections.
#
# Its cost is the arguments, not the decisions: each ARGV string, each string of a reply and each argument of a
# redis.call is one conversion in and out of Lua: a script that did nothing but the HSET cost 90 % of the former
# checked write. So the stored times are read first, alone (8 strings, not 17); the stored values only when a
# time is equal (a re-run); a shared event time travels once per entity, not once per feature; and the HSET's
# argument table is reused from entity to entity. Now the checks cost next to nothing: this script and an
# HSET-only one cost Redis the same (docs/online_features.md, Writes).
WRITE_SCRIPT = """
local mode = ARGV[1]
local nf = tonumber(ARGV[2])
local max_examples = tonumber(ARGV[3])
local shared = ARGV[4] == 'shared'
local vf, tf = {}, {}
for j = 1, nf do
  vf[j] = 'v:' .. ARGV[4 + j]
  tf[j] = 't:' .. ARGV[4 + j]
end
local stride = shared and nf + 1 or 2 * nf
local written, unchanged, stale, corrected, rejected = 0, 0, 0, 0, 0
local result = {0, 0, 0, 0, 0}
local out = {'_', '1'}
for i = 1, #KEYS do
  local key = KEYS[i]
  local at = 4 + nf + (i - 1) * stride
  local times = redis.call('HMGET', key, unpack(tf))
  local values = nil
  local n = 2
  local value, time, new
  if shared then
    time = ARGV[at + 1]
    new = tonumber(time)
  end
  for j = 1, nf do
    if shared then
      value = ARGV[at + 1 + j]
    else
      value, time = ARGV[at + 2 * j - 1], ARGV[at + 2 * j]
      new = tonumber(time)
    end
    local stored_time = times[j]
    local write = false
    if not stored_time then
      write = true
      written = written + 1
    else
      local old = tonumber(stored_time)
      if old > new then
        stale = stale + 1
      elseif old < new then
        write = true
        written = written + 1
      else
        if not values then
          values = redis.call('HMGET', key, unpack(vf))
        end
        local stored_value = values[j]
        if stored_value == value then
          unchanged = unchanged + 1
        elseif mode == 'apply' then
          write = true
          corrected = corrected + 1
        else
          rejected = rejected + 1
          if rejected <= max_examples then
            result[#result + 1] = i - 1
            result[#result + 1] = j - 1
            result[#result + 1] = stored_value or ''
          end
        end
      end
    end
    if write then
      out[n + 1] = vf[j]
      out[n + 2] = value
      out[n + 3] = tf[j]
      out[n + 4] = time
      n = n + 4
    end
  end
  if n > 2 then
    redis.call('HSET', key, unpack(out, 1, n))
  end
end
result[1], result[2], result[3], result[4], result[5] = written, unchanged, stale, corrected, rejected
return result
"""
WRITE_SHA = hashlib.sha1(WRITE_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# One HMGET per entity, answered as ONE comma-joined string: redis-py's pure-Python RESP parser costs ~1 µs per
# array element, so 100 entities × 17 fields as arrays cost ~3 ms; one bulk string and bytes.split cost ~50 µs.
# Per entity: the "_" marker ("1" or ""), then value and time of each feature ("" when absent). No stored token
# holds a comma: values are decimals, "nan", "inf" or "", times are digits.
READ_SCRIPT = """
local nf = #ARGV
local out = {}
local k = 0
for i = 1, #KEYS do
  local row = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, nf do
    k = k + 1
    out[k] = row[j] or ''
  end
end
return table.concat(out, ',')
"""
READ_SHA = hashlib.sha1(READ_SCRIPT.encode(), usedforsecurity=False).hexdigest()

# A request's features in one call: per entity ONE HMGET of the batch fields and the window states, per other
# feature group key one HMGET of its window states. Returns {batch CSV (as READ_SCRIPT), then per KEY its non-empty
# window states joined by newlines} (a JSON state never holds a raw newline).
# KEYS: the entity hashes, then the group hashes. ARGV: entity count, batch field count, window column count, the
# batch fields, the window columns.
ONLINE_READ_SCRIPT = """
local n, nf, nw = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {}
for j = 1, nf + nw do
  fields[j] = ARGV[3 + j]
end
local windows = {}
for j = 1, nw do
  windows[j] = ARGV[3 + nf + j]
end
local csv = {}
local out = {''}
local k = 0
for i = 1, #KEYS do
  local row, first
  if i <= n then
    row = redis.call('HMGET', KEYS[i], unpack(fields))
    for j = 1, nf do
      k = k + 1
      csv[k] = row[j] or ''
    end
    first = nf
  elseif nw > 0 then
    row = redis.call('HMGET', KEYS[i], unpack(windows))
    first = 0
  end
  local parts = {}
  for j = 1, nw do
    local state = row[first + j]
    if state then
      parts[#parts + 1] = state
    end
  end
  out[i + 1] = table.concat(parts, '\\n')
end
out[1] = table.concat(csv, ',')
return out
"""
ONLINE_READ_SHA = hashlib.sha1(ONLINE_READ_SCRIPT.encode(), usedforsecurity=False).hexdigest()
