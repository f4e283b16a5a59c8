-- wrk script for bench/serve_load.sh: POSTs the JSON bodies of the file named
-- by $LDAPROJ_BODIES (one per line) in turn, and prints one RESULT line with
-- requests/s, latency percentiles and every kind of error wrk counts
-- (connect, read, write, timeout, non-2xx status).
local bodies = {}
local next_body = 1

function init(args)
  local path = os.getenv("LDAPROJ_BODIES")
  local file = assert(io.open(path, "r"), "cannot read " .. tostring(path))
  for line in file:lines() do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  file:close()
  assert(#bodies > 0, path .. " has no request bodies")
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f requests_per_s=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f " ..
    "errors=%d (connect %d, read %d, write %d, timeout %d, non-2xx %d)\n",
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, errors, e.connect, e.read, e.write, e.timeout, e.status))
end
