-- wrk script for bench/soak.sh: rotates a mix of checkouts and checks every answer as it comes.
--
-- Kinds (the order_id "soak-<kind>" names the kind, and checkoutd echoes it in every answer):
--   accepted  tok_visa, SKU-1, US        -> 200 (502/504 while an upstream is down or faulty)
--   oos       an OOS- sku                -> 422, inventory rejected (409)
--   zz        address country "ZZ"       -> 422, address rejected (422)
--   error     tok_error                  -> 502, payment upstream_error (500)
--   garbage   tok_garbage                -> 502, payment invalid_response
--   slow      tok_slow (payment timeout_ms is small in soak.sh's config) -> 504, payment timeout
-- The rotation (per connection: accepted x3, oos, zz, error, garbage, slow) starts at another
-- place on each thread.
--
-- Checks on every answer (a failed check is counted by reason; the first SOAK_BAD_KEEP answers
-- of each thread that fail one are written to $SOAK_BAD-<thread>.txt):
--   - the status is 200, 422, 502 or 504;
--   - 200: "status":"accepted", a results object, only for the accepted kind;
--   - 422/502/504: "status" rejected (422) or failed; every configured validation ($SOAK_NAMES,
--     space-separated) exactly once across errors[].validation, completed and cancelled;
--     the message's "N of M" matches; the status follows the kinds (any rejected -> 422, else any
--     timeout -> 504, else 502); a rejection only where the kind asks for one (oos: inventory,
--     zz: address), and for error/garbage/slow the payment error, when there is one, of a kind
--     that its token or an upstream fault can give.
-- done() prints machine-readable lines that soak.sh parses:
--   @@total requests=N err_connect=N err_read=N err_write=N err_timeout=N p50_ms= p99_ms= max_ms=
--   @@status <code> N        @@kind <kind> <code> N        @@bad <reason> N
--   @@second <unix second> <code> N

local body_of = function(kind, token, sku, country)
  return '{"order_id":"soak-' .. kind .. '","address":{"name":"Ada","line1":"1 Main St",'
    .. '"city":"Springfield","postal_code":"12345","country":"' .. country .. '"},'
    .. '"items":[{"sku":"' .. sku .. '","quantity":1}],'
    .. '"payment":{"method":"card","token":"' .. token .. '","amount":2598,"currency":"USD"}}'
end

local mix = {
  body_of("accepted", "tok_visa", "SKU-1", "US"),
  body_of("oos", "tok_visa", "OOS-7", "US"),
  body_of("accepted", "tok_visa", "SKU-1", "US"),
  body_of("zz", "tok_visa", "SKU-1", "ZZ"),
  body_of("error", "tok_error", "SKU-1", "US"),
  body_of("accepted", "tok_visa", "SKU-1", "US"),
  body_of("garbage", "tok_garbage", "SKU-1", "US"),
  body_of("slow", "tok_slow", "SKU-1", "US"),
}

-- A rejection is expected only here; other kinds must never be 422.
local rejects = { oos = "inventory", zz = "address" }
-- The payment error kinds each token can give (transport/timeout: the fake upstreams are down).
local pay_kinds = {
  error = { upstream_error = true, transport = true, timeout = true },
  garbage = { invalid_response = true, transport = true, timeout = true },
  slow = { timeout = true, transport = true },
}

local threads = {}
local thread_no = 0

function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
  table.insert(threads, thread)
end

function init(args)
  -- globals on purpose: done() reads them with thread:get()
  statuses = {} -- code -> n
  kinds = {}    -- "kind code" -> n
  bad = {}      -- reason -> n
  seconds = {}  -- "unix-second code" -> n
  names = {}
  for n in string.gmatch(os.getenv("SOAK_NAMES") or "address inventory payment", "[%w_]+") do
    table.insert(names, n)
  end
  keep = tonumber(os.getenv("SOAK_BAD_KEEP") or "20")
  bad_path = os.getenv("SOAK_BAD")
  kept = 0
  reqs = {}
  for i, b in ipairs(mix) do
    reqs[i] = wrk.format("POST", "/checkout", { ["Content-Type"] = "application/json" }, b)
  end
  idx = (tid * 3) % #reqs
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

local function fail(reason, status, body)
  bad[reason] = (bad[reason] or 0) + 1
  if bad_path and kept < keep then
    kept = kept + 1
    local f = io.open(bad_path .. "-" .. tid .. ".txt", "a")
    if f then
      f:write(os.time(), " ", status, " ", reason, "\n", body, "\n")
      f:close()
    end
  end
end

-- The error group: nil when it holds together, else the reason.
local function check_group(status, body, kind)
  local want = (status == 422) and "rejected" or "failed"
  if body:match('"status":"([%a_]+)"') ~= want then return "status_field" end
  local seen = {}
  local nerr, rejected, timeout = 0, nil, false
  for v, k in body:gmatch('"validation":"([%w_]+)","kind":"([%a_]+)"') do
    nerr = nerr + 1
    seen[v] = (seen[v] or 0) + 1
    if k == "rejected" then
      if rejected then return "two_rejections" end
      rejected = v
    elseif k == "timeout" then
      timeout = true
    end
    if v == "payment" and pay_kinds[kind] and not pay_kinds[kind][k] then return "payment_kind" end
  end
  local _, nval = body:gsub('"validation":"', "")
  if nval ~= nerr then return "error_fields_order" end
  local completed = body:match('"completed":%[(.-)%]')
  local cancelled = body:match('"cancelled":%[(.-)%]')
  if not completed or not cancelled then return "no_completed_cancelled" end
  for v in (completed .. "," .. cancelled):gmatch('"([%w_]+)"') do
    seen[v] = (seen[v] or 0) + 1
  end
  local total = 0
  for _, n in ipairs(names) do
    if seen[n] ~= 1 then return "not_exactly_once" end
    total = total + 1
  end
  for v, c in pairs(seen) do total = total - c end
  if total ~= 0 then return "unknown_validation" end
  local m, of = body:match('"message":"checkout failed: (%d+) of (%d+) validations failed"')
  if tonumber(m) ~= nerr or tonumber(of) ~= #names then return "group_message" end
  local rule = rejected and 422 or (timeout and 504 or 502)
  if rule ~= status then return "status_rule" end
  if rejected and rejects[kind] ~= rejected then return "unexpected_rejection" end
  return nil
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local kind = body:match('^{"order_id":"soak%-(%a+)"') or "?"
  local k = kind .. " " .. status
  kinds[k] = (kinds[k] or 0) + 1
  local s = os.time() .. " " .. status
  seconds[s] = (seconds[s] or 0) + 1
  local why
  if status == 200 then
    if kind ~= "accepted" then
      why = "200_for_" .. kind
    elseif not body:find('"status":"accepted","results":{', 1, true) then
      why = "200_shape"
    else
      for _, n in ipairs(names) do
        if not body:find('"' .. n .. '":{', 1, true) then why = "200_missing_result" end
      end
    end
  elseif status == 422 or status == 502 or status == 504 then
    if kind == "?" then why = "no_order_id" else why = check_group(status, body, kind) end
  else
    why = "status_" .. status
  end
  if why then fail(why, status, body) end
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
    .. "p50_ms=%.1f p99_ms=%.1f max_ms=%.1f\n", summary.requests, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
  for k, n in pairs(merge("statuses")) do io.write(string.format("@@status %s %d\n", k, n)) end
  for k, n in pairs(merge("kinds")) do io.write(string.format("@@kind %s %d\n", k, n)) end
  for k, n in pairs(merge("bad")) do io.write(string.format("@@bad %s %d\n", k, n)) end
  for k, n in pairs(merge("seconds")) do io.write(string.format("@@second %s %d\n", k, n)) end
end
