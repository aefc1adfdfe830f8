"""The Lua scripts of the Redis feature store: each call is one round trip and one atomic step on the server."""

from __future__ import annotations

import hashlib

__all__ = ["ONLINE_READ_SCRIPT", "ONLINE_READ_SHA", "READ_SCRIPT", "READ_SHA", "WRITE_SCRIPT", "WRITE_SHA"]

# Applied per entity and feature; the decision table is the one in online/features/store.py's docstring.
# ARGV: mode, feature count F, F feature names, then per entity per feature: value, event time (µs).
# Returns: written, unchanged, stale, corrected, rejected, then (entity index, feature index, stored value)
# of the first few rejections.
WRITE_SCRIPT = """
local mode = ARGV[1]
local nf = tonumber(ARGV[2])
local max_examples = tonumber(ARGV[3])
local fields = {'_'}
for j = 1, nf do
  fields[2 * j] = 'v:' .. ARGV[3 + j]
  fields[2 * j + 1] = 't:' .. ARGV[3 + j]
end
local base = 3 + nf
local written, unchanged, stale, corrected, rejected = 0, 0, 0, 0, 0
local result = {0, 0, 0, 0, 0}
for i = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[i], unpack(fields))
  local out = {'_', '1'}
  local n = 2
  for j = 1, nf do
    local at = base + ((i - 1) * nf + (j - 1)) * 2 + 1
    local value, time = ARGV[at], ARGV[at + 1]
    local stored_value, stored_time = stored[2 * j], stored[2 * j + 1]
    local write = false
    if not stored_time then
      write = true
      written = written + 1
    else
      local old, new = tonumber(stored_time), tonumber(time)
      if old > new then
        stale = stale + 1
      elseif old < new then
        write = true
        written = written + 1
      elseif stored_value == value then
        unchanged = unchanged + 1
      elseif mode == 'apply' then
        write = true
        corrected = corrected + 1
      else
        rejected = rejected + 1
        if rejected <= max_examples then
          table.insert(result, i - 1)
          table.insert(result, j - 1)
          table.insert(result, stored_value or '')
        end
      end
    end
    if write then
      out[n + 1] = fields[2 * j]
      out[n + 2] = value
      out[n + 3] = fields[2 * j + 1]
      out[n + 4] = time
      n = n + 4
    end
  end
  if n > 2 then
    redis.call('HSET', KEYS[i], unpack(out))
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
