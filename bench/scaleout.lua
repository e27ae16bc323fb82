-- wrk script for bench/scaleout.sh: POSTs the README's accepted checkout and records every answer:
-- by status, by who answered (checkoutd's answers are JSON objects; haproxy's own error pages are
-- HTML), and per wall-clock second (to see throughput dip and recover around the kills).
-- done() prints machine-readable lines that scaleout.sh parses:
--   @@total requests=N err_connect=N err_read=N err_write=N err_timeout=N
--   @@status <code> <checkoutd|haproxy> N
--   @@second <unix second> N
-- Every request carries an Idempotency-Key (checkoutd forwards it to the upstreams): a request that
-- haproxy retries after a replica died mid-checkout reaches the payment service twice with the
-- same key, which is what lets a real payment service answer the second call without charging.

wrk.method = "POST"
wrk.path = "/checkout"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"order_id":"ord-1001","address":{"name":"Ada","line1":"1 Main St","city":"Springfield",'
  .. '"postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":2}],'
  .. '"payment":{"method":"card","token":"tok_visa","amount":2598,"currency":"USD"}}'

local threads = {}
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
  table.insert(threads, thread)
end

function init(args)
  -- globals on purpose: done() reads them with thread:get()
  statuses = {}   -- "200 checkoutd" -> n
  seconds = {}    -- unix second -> answers
  seq = 0
end

-- A new key per request (thread id + counter). wrk.format replaces all of wrk.headers with the
-- table given, so Content-Type is repeated here.
function request()
  seq = seq + 1
  return wrk.format(nil, nil, {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "so-" .. tid .. "-" .. seq,
  })
end

function response(status, headers, body)
  local who = (body:sub(1, 1) == "{") and "checkoutd" or "haproxy"
  local k = status .. " " .. who
  statuses[k] = (statuses[k] or 0) + 1
  local s = os.time()
  seconds[s] = (seconds[s] or 0) + 1
end

local function merge(name)
  local total = {}
  for _, t in ipairs(threads) do
    local m = t:get(name)
    if m then
      for k, n in pairs(m) do
        total[k] = (total[k] or 0) + n
      end
    end
  end
  return total
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("@@total requests=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d "
    .. "p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", summary.requests, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  for k, n in pairs(merge("statuses")) do
    io.write(string.format("@@status %s %d\n", k, n))
  end
  for s, n in pairs(merge("seconds")) do
    io.write(string.format("@@second %d %d\n", s, n))
  end
end
