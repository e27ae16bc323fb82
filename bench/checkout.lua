-- wrk script for bench/bench.sh: POSTs one checkout (303 bytes of JSON) per request and,
-- in done(), prints one machine-readable line that bench.sh parses:
--   @@bench requests=N duration_us=N rps=N p50_us=N p90_us=N p99_us=N p999_us=N max_us=N non2xx=N
--           err_connect=N err_read=N err_write=N err_timeout=N [status_200=N status_422=N ...]
--
-- Environment:
--   BENCH_PATH           request path (default /checkout)
--   BENCH_COUNT_STATUS=1 count every answer by status with a response() callback. wrk parses
--                        headers and body and calls into Lua for each answer only when response()
--                        exists, which costs throughput, so it is defined only when asked for
--                        (bench.sh asks in the fail scenario, where "every answer is a 422" is
--                        the thing to check and wrk's own count only knows 2xx/3xx vs the rest).
--   BENCH_IDEM_KEYS=1    every request carries a new Idempotency-Key (run prefix, thread, counter):
--                        the cost of claiming and storing one key per checkout. wrk then builds
--                        each request in Lua (request()), which costs wrk some CPU of its own.

wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/checkout"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"order_id":"ord-bench-0001",'
  .. '"address":{"name":"Ada Lovelace","line1":"1 Main St","line2":"Apt 4","city":"Springfield",'
  .. '"postal_code":"12345","country":"US"},'
  .. '"items":[{"sku":"SKU-1","quantity":2},{"sku":"SKU-42","quantity":1}],'
  .. '"payment":{"method":"card","token":"tok_visa","amount":2598,"currency":"USD"}}'

-- Each wrk thread runs this file in its own Lua state; setup() runs in the main state once per
-- thread, so keeping the thread objects here is how done() reaches the per-thread counters.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_no", #threads)
end

function init(args)
  statuses = {} -- global on purpose: done() reads it with thread:get("statuses")
end

if os.getenv("BENCH_IDEM_KEYS") == "1" then
  -- unique across runs (the Redis store keeps keys for ttl_s) and threads
  local f = io.open("/proc/sys/kernel/random/uuid")
  local run = f and f:read("*l") or string.format("%x", os.time())
  if f then f:close() end
  local n = 0
  function request()
    n = n + 1
    local key = string.format("bench-%s-%d-%d", run, thread_no or 0, n)
    return wrk.format(nil, nil, {["Content-Type"] = "application/json", ["Idempotency-Key"] = key})
  end
end

if os.getenv("BENCH_COUNT_STATUS") == "1" then
  function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local parts = {
    "@@bench",
    string.format("requests=%d", summary.requests),
    string.format("duration_us=%d", summary.duration),
    string.format("rps=%.1f", summary.requests / secs),
    string.format("p50_us=%d", latency:percentile(50)),
    string.format("p90_us=%d", latency:percentile(90)),
    string.format("p99_us=%d", latency:percentile(99)),
    string.format("p999_us=%d", latency:percentile(99.9)),
    string.format("max_us=%d", latency.max),
    string.format("non2xx=%d", e.status),
    string.format("err_connect=%d", e.connect),
    string.format("err_read=%d", e.read),
    string.format("err_write=%d", e.write),
    string.format("err_timeout=%d", e.timeout),
  }
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for code, n in pairs(s) do
        total[code] = (total[code] or 0) + n
      end
    end
  end
  local codes = {}
  for code in pairs(total) do
    table.insert(codes, code)
  end
  table.sort(codes)
  for _, code in ipairs(codes) do
    table.insert(parts, string.format("status_%d=%d", code, total[code]))
  end
  io.write(table.concat(parts, " "), "\n")
end
