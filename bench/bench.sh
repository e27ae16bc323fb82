#!/usr/bin/env bash
# bench/bench.sh — what `make bench` runs: checkoutd side by side with the Python asyncio reference
# peer (../shared/peers/python/checkout_peer.py), on the same nginx upstream stubs
# (../shared/peers/upstreams/), driven by wrk with bench/checkout.lua, interleaved run by run.
#
# Usage: bench/bench.sh [BUILD_DIR]          (default build/release; `make bench` builds it first)
#
# Scenarios (rows of the table):
#   fast  every validation -> stub that answers 200 at once,        wrk 64 connections
#   slow  every validation -> stub that answers 200 after 50 ms,    wrk 256 connections
#         (bound: 256 / 0.05 s = 5,120 checkouts/s)
#   fail  address -> 200 at once, inventory -> 409 after 5 ms, payment -> 200 after 5 s,
#         wrk 64 connections: every answer must be a 422 in about 5 ms (payment cancelled)
#   fast_key, fast_key_redis  fast, each request with a new Idempotency-Key: claimed and stored in
#         the memory store / in a Redis (redis-server started here on a free port, flushed before
#         each run). Beside fast, from the same run: the cost of the feature per checkout.
#   fail_comp  fail with payment's "compensate" at the fast stub: every checkout also sends one
#         void (payment was cancelled after its request left), after its answer; the cost of
#         compensation in CPU per checkout, and p99 (which must not move: the void is not waited for)
#   fast_names  fast with the upstreams named "localhost" instead of 127.0.0.1 (v1.3 names: checkoutd
#         resolves them off the request path, c-ares reading the hosts file; the peer as it does)
#   fast_comp  fast with payment's "compensate" at the fast stub, so every checkout journals (v1.3,
#         "Durable compensation": its begin record durable before the first upstream request, its
#         "accepted" record before the 200), every checkout accepted: the journal's cost on the
#         success path. The journal is a file in $TMPDIR (this machine's disk); the row's note
#         gives fsyncs (commits) per second and records per commit (the group commit's batch)
#   fast_comp_off, fail_comp_off  fast_comp and fail_comp with CHECKOUTD_JOURNAL_STORE=off (v1.2's
#         in-process compensation): the same run without the journal (checkoutd only: the peer has
#         no journal, its rows are those of fast_comp / fail_comp)
#   flaky address, inventory -> 200 at once, payment -> the flaky stub (503 at once for ~10 % of
#         requests, else 200 at once), no retry: ~90 % of checkouts succeed. wrk 64 connections
#   flaky_r2  the same with payment "retry": {"attempts": 2} (backoff 25 ms, full jitter): ~99 %
#         succeed, at the price of a second request (and its backoff) for ~10 % of them
#   hold  (not in the default set) address and inventory -> 200 at once, payment -> 200 after 5 s,
#         BENCH_HOLD_CONNECTIONS (4000) connections: every connection keeps one checkout in
#         flight, which gives the memory per in-flight checkout. No warm-up; at least 12 s.
#
# Environment:
#   BENCH_SECONDS=10     measured seconds per run (after BENCH_WARMUP=2 seconds of warm-up)
#   BENCH_ROUNDS=3       rounds; each round runs every scenario on checkoutd then on the peer, and
#                        the table shows medians over the rounds (the cores are shared: one run lies)
#   BENCH_QUICK=1        smoke mode: 1 round, 1 s warm-up + 2 s measured (about 3 s a run)
#   BENCH_SCENARIOS="fast fast_names fast_key fast_key_redis slow fail fail_comp fail_comp_off fast_comp fast_comp_off flaky flaky_r2" (add hold for memory per in-flight checkout)
#   BENCH_SERVERS="checkoutd peer"   BENCH_THREADS=2 (wrk -t)
#   BENCH_CONNECTIONS=64 wrk's connections for every scenario but slow (256) and hold (for example
#                        256 with fast_comp/fast_comp_off: the journal's cost when a checkout's
#                        two fsync waits are a smaller share of its latency)
#   BENCH_COUNT_STATUS=1 count answers by status in every scenario (always on in fail; it costs wrk
#                        throughput, so fast/slow rely on wrk's own non-2xx count unless asked)
#   BENCH_OUT=bench/out  where the table (.md), the raw rows (.tsv), the wrk log (.log) and the
#                        picture (latency.png, bench/plot.sh) go
#
# It starts only its own processes and stops them by PID (nginx through stop.sh and its pid file),
# listens only on 127.0.0.1, and removes its temporary directory on any exit. Ctrl-C stops it at
# once (wrk gets the signal too); a SIGTERM to the script alone acts when the current wrk run ends.
# "other load" in the table is the CPU the rest of the machine used during each run: the noise.
set -eu
set -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
peers="$root/../shared/peers"
build=${1:-build/release}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
checkoutd="$build/checkoutd"
python=/usr/bin/python3 # Debian's python: python3-aiohttp is installed for it, not for a pyenv

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  warmup=${BENCH_WARMUP:-1}
  seconds=${BENCH_SECONDS:-2}
  rounds=${BENCH_ROUNDS:-1}
else
  warmup=${BENCH_WARMUP:-2}
  seconds=${BENCH_SECONDS:-10}
  rounds=${BENCH_ROUNDS:-3}
fi
scenarios=${BENCH_SCENARIOS:-fast fast_names fast_key fast_key_redis slow fail fail_comp fail_comp_off fast_comp fast_comp_off flaky flaky_r2}
servers=${BENCH_SERVERS:-checkoutd peer}
threads=${BENCH_THREADS:-2}
outdir=${BENCH_OUT:-$root/bench/out}
clk_tck=$(getconf CLK_TCK)
TIMEFORMAT='%U %S'

die() {
  echo "bench.sh: $*" >&2
  exit 1
}
say() { echo "bench.sh: $*" >&2; }

# ---- preconditions: say what is missing instead of failing half-way ---------------------------
[ -x "$checkoutd" ] || die "no $checkoutd (run 'make bench', or 'make' first)"
if [ ! -d "$peers/upstreams" ] || [ ! -f "$peers/python/checkout_peer.py" ]; then
  die "no $peers (the shared folder must sit beside the repo: X/main and X/shared)"
fi
for tool in wrk nginx curl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (sh scripts/deps.sh bench)"
done
"$python" -c 'import aiohttp' 2>/dev/null || die "python3-aiohttp is missing (sh scripts/deps.sh bench)"

# ---- the temporary directory and cleanup ------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/checkoutd-bench.XXXXXX")
# nginx's workers run as nobody and must reach their prefix under this directory.
chmod 755 "$tmp"
srv_pid=""
stubs_up=0
redis_pid=""

stop_server() {
  [ -n "$srv_pid" ] || return 0
  kill -TERM "$srv_pid" 2>/dev/null || true
  # Both servers drain in-flight checkouts on SIGTERM; after the load stopped there are none,
  # so 10 s is generous. A server that hangs is killed rather than left behind.
  local i
  for i in $(seq 100); do
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$srv_pid" 2>/dev/null; then
    say "PID $srv_pid did not stop on SIGTERM in 10 s: SIGKILL"
    kill -KILL "$srv_pid" 2>/dev/null || true
  fi
  wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_server
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  if [ "$stubs_up" = 1 ]; then
    bash "$peers/upstreams/stop.sh" "$tmp/stubs" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the nginx stubs on a free base port ------------------------------------------------------
# A port is taken when any socket of /proc/net/tcp{,6} has it as local port (any state, so a
# TIME_WAIT left by an earlier run counts as taken too).
port_taken() {
  local hex
  hex=$(printf ':%04X' "$1")
  awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

start_stubs() {
  local try base p free
  for try in $(seq 20); do
    # Below the ephemeral range (32768-60999), so that outgoing connections cannot hold them.
    base=$((20000 + (RANDOM % 2000) * 6))
    free=1
    for p in $base $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)) $((base + 5)); do
      if port_taken "$p"; then free=0; fi
    done
    [ "$free" = 1 ] || continue
    rm -rf "$tmp/stubs"
    # Another program may still take a port between the check and nginx's bind: try again then.
    if bash "$peers/upstreams/start.sh" "$base" "$tmp/stubs" >"$tmp/stubs.out" 2>&1; then
      stubs_up=1
      stub_base=$base
      say "nginx stubs: $(cat "$tmp/stubs.out")"
      return 0
    fi
    say "stubs did not start on $base (try $try): $(tail -n 2 "$tmp/stubs.out" | tr '\n' ' ')"
  done
  die "could not start the nginx stubs"
}

# ---- redis-server for fast_key_redis, on a free port below the ephemeral range -----------------
start_redis() {
  local try p
  command -v redis-server >/dev/null 2>&1 || die "redis-server is missing (sh scripts/deps.sh bench)"
  for try in $(seq 20); do
    p=$((22000 + RANDOM % 8000))
    port_taken "$p" && continue
    redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
      >"$tmp/redis.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 50); do
      if redis-cli -p "$p" ping 2>/dev/null | grep -q PONG; then
        redis_port=$p
        say "redis-server on 127.0.0.1:$p"
        return 0
      fi
      sleep 0.1
    done
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  done
  die "could not start redis-server"
}

# ---- configs: one per scenario, the same file for checkoutd and the peer ----------------------
write_config() { # scenario file
  local s=$1 f=$2 a i p retry="" host=127.0.0.1
  case "$s" in
    fail_comp | fail_comp_off) a=$stub_base i=$((stub_base + 2)) p=$((stub_base + 3))
      retry=', "compensate": {"url": "http://127.0.0.1:'"$stub_base"'/void"}' ;;
    fast_comp | fast_comp_off) a=$stub_base i=$stub_base p=$stub_base
      retry=', "compensate": {"url": "http://127.0.0.1:'"$stub_base"'/void"}' ;;
    flaky) a=$stub_base i=$stub_base p=$((stub_base + 5)) ;;
    flaky_r2) a=$stub_base i=$stub_base p=$((stub_base + 5)) retry=', "retry": {"attempts": 2}' ;;
    fast | fast_key | fast_key_redis) a=$stub_base i=$stub_base p=$stub_base ;;
    fast_names) a=$stub_base i=$stub_base p=$stub_base host=localhost ;;
    slow) a=$((stub_base + 1)) i=$((stub_base + 1)) p=$((stub_base + 1)) ;;
    fail) a=$stub_base i=$((stub_base + 2)) p=$((stub_base + 3)) ;;
    hold) a=$stub_base i=$stub_base p=$((stub_base + 3)) ;;
    *) die "unknown scenario '$s' (fast, fast_names, fast_key, fast_key_redis, slow, fail, fail_comp, fail_comp_off, fast_comp, fast_comp_off, flaky, flaky_r2, hold)" ;;
  esac
  # fast_key: the default memory store, sized for every key of a run (no eviction in the table);
  # the other scenarios send no key, so the store (memory by default) is never touched.
  local idem='{"store": "memory", "max_keys": 2000000}'
  [ "$s" = fast_key_redis ] && idem="{\"store\": \"redis\", \"redis_url\": \"redis://127.0.0.1:$redis_port\"}"
  # Deadlines and timeouts far above every stub's delay but the 5 s one: no answer in the table
  # is a timeout; in fail the 409 after 5 ms must cancel the 5 s payment call, not a timer.
  cat >"$f" <<JSON
{
  "listen": "127.0.0.1:0",
  "deadline_ms": 10000,
  "max_body_bytes": 65536,
  "max_inflight": 100000,
  "max_upstream_body_bytes": 1048576,
  "idempotency": $idem,
  "validations": [
    {"name": "address",   "field": "address", "url": "http://$host:$a/validate", "timeout_ms": 10000},
    {"name": "inventory", "field": "items",   "url": "http://$host:$i/check",    "timeout_ms": 10000},
    {"name": "payment",   "field": "payment", "url": "http://$host:$p/verify",   "timeout_ms": 10000$retry}
  ]
}
JSON
}

connections_for() {
  case "$1" in
    slow) echo 256 ;;
    hold) echo "${BENCH_HOLD_CONNECTIONS:-4000}" ;;
    *) echo "${BENCH_CONNECTIONS:-64}" ;;
  esac
}

# ---- one server process ----------------------------------------------------------------------
# Sets srv_pid and srv_port. Its stderr (one JSON log line per checkout, for both servers) goes
# to a file: both pay for their logging as they would in production.
start_server() { # server config
  local server=$1 cfg=$2 i
  : >"$tmp/srv.out"
  # v1.3: a fresh journal per run (in $TMPDIR: this machine's disk), or none for the *_off runs
  rm -f "$tmp/journal.db" "$tmp/journal.db-wal" "$tmp/journal.db-shm" "$tmp/journal.db.lock"
  local jstore=file
  case "$cur_scenario" in *_off) jstore=off ;; esac
  case "$server" in
    checkoutd) CHECKOUTD_JOURNAL_PATH="$tmp/journal.db" CHECKOUTD_JOURNAL_STORE=$jstore \
      "$checkoutd" --config "$cfg" >"$tmp/srv.out" 2>"$tmp/srv.err" & ;;
    peer) "$python" "$peers/python/checkout_peer.py" --config "$cfg" >"$tmp/srv.out" 2>"$tmp/srv.err" & ;;
    *) die "unknown server '$server' (checkoutd, peer)" ;;
  esac
  srv_pid=$!
  for i in $(seq 200); do
    if grep -q 'listening on' "$tmp/srv.out" 2>/dev/null; then
      srv_port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$tmp/srv.out" | head -n 1)
      [ -n "$srv_port" ] && return 0
    fi
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.05
  done
  say "$server did not start; its stderr ends with:"
  tail -n 5 "$tmp/srv.err" >&2 || true
  stop_server
  return 1
}

# utime + stime of the whole process (all threads), in clock ticks. The command name (field 2)
# may hold spaces, so the fields are counted after its closing parenthesis.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086 # word splitting into fields is the point
  set -- $stat
  # After "pid (comm) ", field 3 (state) is $1, so utime (14) is ${12} and stime (15) ${13}.
  echo $((${12} + ${13}))
}

# Busy ticks of the whole machine (user, nice, system, irq, softirq, steal) from /proc/stat.
# Printed as "BUSY NICE": nice time is the part spent by processes of lower priority (nice > 0),
# which mostly fill the gaps this benchmark leaves, so it is reported apart.
machine_busy_ticks() {
  awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $3; exit }' /proc/stat
}

# CPU ticks of the nginx stubs: the master (pid file) and its workers.
stub_ticks() {
  local master total=0 p
  master=$(cat "$tmp/stubs/nginx.pid" 2>/dev/null) || { echo 0; return; }
  for p in $master $(pgrep -P "$master" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(cpu_ticks "$p")))
  done
  echo "$total"
}

status_kb() { # pid key -> kB value from /proc/PID/status
  awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"
}

# A single checkout before the load: proves the wiring (a fast run that answers 502 would
# otherwise show up as a very fast, very wrong row).
probe() { # scenario port
  local want=200 got
  case "$1" in fail | fail_comp | fail_comp_off) want=422 ;; esac
  got=$(curl -s -o "$tmp/probe.body" -w '%{http_code} %{time_total}' --max-time 15 \
    -X POST "http://127.0.0.1:$2/checkout" -H 'Content-Type: application/json' \
    --data-binary '{"order_id":"ord-probe","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":1}],"payment":{"method":"card","token":"tok_visa","amount":100,"currency":"USD"}}' ||
    true)
  if [ "${got%% *}" != "$want" ]; then
    say "probe of $1 answered '$got' (expected $want): $(head -c 300 "$tmp/probe.body" 2>/dev/null)"
  fi
}

# ---- one run: start, probe, warm up, measure, stop ------------------------------------------------
# Appends one tab-separated row to $raw (see the header written below).
run_one() { # round scenario server
  local round=$1 s=$2 server=$3 conns url t0 t1 c0 c1 hwm rss_warm rss_end line
  local requests rps p50 p90 p99 maxl non2xx errs st422 bad cpu_us statuses t_start t_end warm_requests
  local n0 n1 m0 m1 nice0 nice1 wrk_s others_pct niced_pct nginx_us wrk_us rss_idle dur
  conns=$(connections_for "$s")
  dur=$seconds
  local keys=0
  case "$s" in fast_key*) keys=1 ;; esac
  [ "$s" = fast_key_redis ] && redis-cli -p "$redis_port" flushall >/dev/null
  # hold: every checkout takes 5 s, so a run must last longer than that to answer any.
  if [ "$s" = hold ] && [ "$dur" -lt 12 ]; then dur=12; fi
  cur_scenario=$s
  if ! start_server "$server" "$tmp/$s.json"; then
    printf '%s\t%s\t%s\tFAILED\n' "$round" "$s" "$server" >>"$raw"
    return 0
  fi
  url="http://127.0.0.1:$srv_port/checkout"
  probe "$s" "$srv_port"
  rss_idle=$(status_kb "$srv_pid" VmRSS)
  local count=0
  case "$s" in fail | fail_comp | fail_comp_off) count=1 ;; esac
  if [ "${BENCH_COUNT_STATUS:-0}" = 1 ]; then count=1; fi
  t_start=$(date +%s.%N)
  # No warm-up in hold: it would leave $conns checkouts in flight, abandoned by their client,
  # when the measured run starts, and the peak RSS would count both.
  : >"$tmp/warm.out"
  if [ "$s" != hold ]; then
    BENCH_IDEM_KEYS=$keys BENCH_COUNT_STATUS=$count wrk -t"$threads" -c"$conns" -d"${warmup}s" --timeout 10s \
      -s "$here/checkout.lua" "$url" >"$tmp/warm.out" 2>&1 || true
  fi
  warm_requests=$(sed -n 's/^@@bench requests=\([0-9]*\).*/\1/p' "$tmp/warm.out")
  rss_warm=$(status_kb "$srv_pid" VmRSS)
  local jc0 jr0 jc1 jr1
  read -r jc0 jr0 < <(journal_counts "$server")
  c0=$(cpu_ticks "$srv_pid")
  n0=$(stub_ticks)
  read -r m0 nice0 < <(machine_busy_ticks)
  t0=$(date +%s%N)
  # bash's time keyword gives wrk's own CPU (TIMEFORMAT: user and system seconds).
  { time BENCH_IDEM_KEYS=$keys BENCH_COUNT_STATUS=$count wrk -t"$threads" -c"$conns" -d"${dur}s" --timeout 10s \
    --latency -s "$here/checkout.lua" "$url" >"$tmp/wrk.out" 2>&1; } 2>"$tmp/wrk.time" || true
  t1=$(date +%s%N)
  read -r m1 nice1 < <(machine_busy_ticks)
  n1=$(stub_ticks)
  c1=$(cpu_ticks "$srv_pid")
  t_end=$(date +%s.%N)
  hwm=$(status_kb "$srv_pid" VmHWM)
  rss_end=$(status_kb "$srv_pid" VmRSS)
  read -r jc1 jr1 < <(journal_counts "$server")
  if [ "$jc1" -gt "$jc0" ]; then
    # the journal's group commit over the measured run: fsyncs per second, records per commit
    printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$s" "$server" \
      "$(awk -v c=$((jc1 - jc0)) -v t=$(((t1 - t0) / 1000000)) 'BEGIN { printf "%.0f", c * 1000 / t }')" \
      "$(awk -v c=$((jc1 - jc0)) -v r=$((jr1 - jr0)) 'BEGIN { printf "%.2f", r / c }')" >>"$jraw"
    say "$(printf 'round %s %s journal: %s commits (fsyncs)/s, %s records per commit' "$round" "$s" \
      "$(tail -n 1 "$jraw" | cut -f 4)" "$(tail -n 1 "$jraw" | cut -f 5)")"
  fi
  stop_server
  {
    echo "=== round $round $s $server (c=$conns) ==="
    cat "$tmp/wrk.out"
  } >>"$wrklog"

  line=$(grep '^@@bench ' "$tmp/wrk.out" | head -n 1 || true)
  if [ -z "$line" ]; then
    say "wrk printed no result for $s/$server (see $wrklog)"
    printf '%s\t%s\t%s\tFAILED\n' "$round" "$s" "$server" >>"$raw"
    return 0
  fi
  val() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  requests=$(val requests)
  rps=$(val rps)
  p50=$(val p50_us)
  p90=$(val p90_us)
  p99=$(val p99_us)
  p999=$(val p999_us)
  maxl=$(val max_us)
  non2xx=$(val non2xx)
  errs=$(($(val err_connect) + $(val err_read) + $(val err_write) + $(val err_timeout)))
  statuses=$(printf '%s\n' "$line" | tr ' ' '\n' | sed -n 's/^status_//p' | tr '\n' ',' | sed 's/,$//')
  if [ "$s" = fail ] || [ "$s" = fail_comp ] || [ "$s" = fail_comp_off ]; then
    st422=$(val status_422)
    bad=$((requests - ${st422:-0}))
  else
    bad=$non2xx
  fi
  cpu_us=$(awk -v d=$((c1 - c0)) -v hz="$clk_tck" -v n="$requests" \
    'BEGIN { if (n > 0) printf "%.1f", d * 1e6 / hz / n; else print "nan" }')
  # The noise gauge: CPU that the machine spent on anything but this server, wrk and the stubs
  # during the measured run, in % of the whole machine (2 cores = 100 %): a run with a large value
  # is not comparable with a quiet one. Niced work (nice > 0) is kept apart in the raw rows, but
  # it competes too: with sched_autogroup, nice only ranks processes within one session.
  wrk_s=$(awk '{ print $1 + $2 }' "$tmp/wrk.time" 2>/dev/null || echo 0)
  read -r others_pct niced_pct nginx_us wrk_us < <(awk -v mb=$((m1 - m0)) -v nc=$((nice1 - nice0)) \
    -v srv=$((c1 - c0)) -v ng=$((n1 - n0)) -v w="$wrk_s" -v hz="$clk_tck" -v wall=$((t1 - t0)) \
    -v ncpu="$(nproc)" -v n="$requests" 'BEGIN {
      cap = wall / 1e9 * ncpu * hz / 100; other = mb - srv - ng - w * hz; if (other < 0) other = 0
      if (nc > other) nc = other
      printf "%.1f %.1f %.1f %.1f\n", (other - nc) / cap, nc / cap, (n ? ng / hz * 1e6 / n : 0), (n ? w * 1e6 / n : 0)
    }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$round" "$s" "$server" "$requests" "$rps" "$p50" "$p90" "$p99" "$maxl" "$bad" "$errs" \
    "$cpu_us" "$hwm" "$rss_warm" "$rss_end" "${statuses:--}" "$t_start" "$t_end" \
    "${warm_requests:-0}" "$others_pct" "$nginx_us" "$wrk_us" "$niced_pct" "$rss_idle" "$conns" "$p999" >>"$raw"
  say "$(printf 'round %s %-4s %-9s %8s req/s  p50 %6.2f ms  p99 %7.2f ms  bad %s  err %s  cpu %s us  hwm %s kB  others %s%% (+%s%% niced)  [%s]' \
    "$round" "$s" "$server" "$rps" "$(awk -v x="$p50" 'BEGIN{print x/1000}')" \
    "$(awk -v x="$p99" 'BEGIN{print x/1000}')" "$bad" "$errs" "$cpu_us" "$hwm" "$others_pct" "$niced_pct" "${statuses:--}")"
  # Sanity of the measurement itself: the run took about as long as asked.
  if [ $(((t1 - t0) / 1000000000)) -gt $((dur + 5)) ]; then
    say "the measured run of $s/$server took $(((t1 - t0) / 1000000000)) s for ${dur} s asked"
  fi
}

# The journal's commits and records so far (checkoutd's /metrics; "0 0" without a journal).
journal_counts() { # server
  if [ "$1" != checkoutd ]; then echo "0 0"; return; fi
  curl -s --max-time 5 "http://127.0.0.1:$srv_port/metrics" | awk '
    $1 == "checkoutd_journal_commits_total" { c = $2 }
    $1 == "checkoutd_journal_records_per_commit_sum" { r = $2 }
    END { printf "%d %d\n", c, r }'
}

# ---- main -------------------------------------------------------------------------------------
mkdir -p "$outdir"
stamp=$(date -u +%Y%m%d-%H%M%S)
raw="$outdir/bench-$stamp.tsv"
wrklog="$outdir/bench-$stamp.log"
jraw="$outdir/bench-$stamp-journal.tsv" # round scenario server commits_per_s records_per_commit
printf 'round\tscenario\tserver\tcommits_per_s\trecords_per_commit\n' >"$jraw"
table="$outdir/bench-$stamp.md"
printf 'round\tscenario\tserver\trequests\trps\tp50_us\tp90_us\tp99_us\tmax_us\tbad\tsock_err\tcpu_us_per_checkout\tvmhwm_kb\tvmrss_after_warmup_kb\tvmrss_end_kb\tstatuses\tt_start\tt_end\twarmup_requests\tothers_cpu_pct\tnginx_cpu_us_per_checkout\twrk_cpu_us_per_checkout\tniced_cpu_pct\tvmrss_idle_kb\tconnections\tp999_us\n' >"$raw"
: >"$wrklog"

start_stubs
case " $scenarios " in *" fast_key_redis "*) start_redis ;; esac
for s in $scenarios; do write_config "$s" "$tmp/$s.json"; done
say "$rounds round(s) x {$scenarios} x {$servers}: ${warmup} s warm-up + ${seconds} s measured each"

for round in $(seq "$rounds"); do
  for s in $scenarios; do
    for server in $servers; do
      # the peer has no journal: its *_off row would repeat its fast_comp / fail_comp row
      case "$s/$server" in *_off/peer) continue ;; esac
      run_one "$round" "$s" "$server"
    done
  done
done

# Stopping nginx flushes its buffered access logs: the hang stub's log tells whether the payment
# calls were really cancelled (nginx logs a caller that hung up as 499, with how long it waited).
bash "$peers/upstreams/stop.sh" "$tmp/stubs" >/dev/null 2>&1 || true
stubs_up=0
hang_port=$((stub_base + 3))
cancel_notes=""
if [ -f "$tmp/stubs/logs/hang.log" ]; then
  # For each fail run: the payment requests that reached the stub (a caller that cancels before
  # its request is sent never shows here), how many the caller cancelled (499), and the median
  # time it kept them open. A log line is given to the run in which its request started
  # ($msec - $request_time), so calls still open when a run ended are counted in it.
  cancel_notes=$(awk -F '\t' -v hp="$hang_port" '
    FNR == NR {
      if (FNR > 1 && $2 == "fail" && $4 != "FAILED") { n++; st[n] = $17 + 0; en[n] = $18 + 0; who[n] = $3; rd[n] = $1; nreq[n] = $4 + $19 }
      next
    }
    $2 == hp {
      start = $1 - $4
      for (i = 1; i <= n; i++) if (start >= st[i] && start <= en[i]) {
        got[i]++
        if ($3 == 499) { c[i]++; t[i, c[i]] = $4 }
      }
    }
    END {
      for (i = 1; i <= n; i++) {
        m = c[i] + 0
        for (a = 1; a <= m; a++) v[a] = t[i, a]
        for (a = 2; a <= m; a++) { x = v[a]; b = a - 1; while (b > 0 && v[b] > x) { v[b + 1] = v[b]; b-- } v[b + 1] = x }
        med = m ? v[int((m + 1) / 2)] * 1000 : 0
        printf "- round %s, %s: %d checkouts (warm-up included); the payment stub received %d requests, %d cancelled by the caller (499), median %.0f ms before the cancel\n", rd[i], who[i], nreq[i], got[i], m, med
      }
    }' "$raw" FS=' ' "$tmp/stubs/logs/hang.log" 2>/dev/null || true)
fi

# The stubs must not be the limit: nginx says so in its error log when it runs out of connections.
stub_errors=""
if [ -f "$tmp/stubs/logs/error.log" ]; then
  stub_errors=$(grep -E '\[(alert|crit|emerg|error)\]' "$tmp/stubs/logs/error.log" |
    sed 's/^[0-9/]* [0-9:]* //; s/, client: .*//' | sort | uniq -c | sort -rn | head -n 5 || true)
fi

# hold: what one in-flight checkout costs in memory, per server.
hold_notes=$(awk -F '\t' '
  function median(list,   a, n, i, j, x) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { x = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  NR > 1 && $2 == "hold" && $4 != "FAILED" && $25 > 0 {
    v[$3] = v[$3] " " ($13 - $24) / $25; c[$3] = $25; idle[$3] = idle[$3] " " $24 / 1024; pk[$3] = pk[$3] " " $13 / 1024
  }
  END {
    for (s in v) printf "- %s: %.1f KiB per in-flight checkout at %d in flight (idle %.1f MB, peak %.1f MB)\n", s, median(v[s]), c[s], median(idle[s]), median(pk[s])
  }' "$raw" | sort)

# flaky: the share of checkouts that succeeded (200), per run.
flaky_notes=$(awk -F '\t' 'NR > 1 && ($2 == "flaky" || $2 == "flaky_r2") && $4 != "FAILED" && $4 > 0 {
    printf "- round %s, %s, %s: %.2f %% of %d checkouts answered 200\n", $1, $2, $3, 100 * ($4 - $10) / $4, $4
  }' "$raw")

# ---- the table: medians over the rounds ------------------------------------------------------
summary=$(awk -F '\t' -v servers="$servers" -v scen="$scenarios" '
  function median(list,   a, n, i, j, x) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { x = a[i] + 0; j = i - 1; while (j > 0 && a[j] + 0 > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
    if (n == 0) return ""
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function add(k, f, v) { vals[k, f] = vals[k, f] " " v }
  NR > 1 && $4 != "FAILED" {
    k = $2 SUBSEP $3
    add(k, "rps", $5); add(k, "p50", $6 / 1000); add(k, "p90", $7 / 1000); add(k, "p99", $8 / 1000)
    add(k, "bad", $10); add(k, "err", $11); add(k, "cpu", $12); add(k, "hwm", $13 / 1024); add(k, "oth", $20 + $23)
    runs[k]++
    if (!(k in lo) || $5 + 0 < lo[k]) lo[k] = $5 + 0
    if (!(k in hi) || $5 + 0 > hi[k]) hi[k] = $5 + 0
  }
  END {
    print "| scenario | server | checkouts/s (min–max) | p50 ms | p90 ms | p99 ms | non-2xx (fail: non-422) | socket errors | CPU µs/checkout | peak RSS MB | other load % |"
    print "|---|---|---|---|---|---|---|---|---|---|---|"
    ns = split(scen, S, " "); nv = split(servers, V, " ")
    for (i = 1; i <= ns; i++) {
      for (j = 1; j <= nv; j++) {
        k = S[i] SUBSEP V[j]
        if (!runs[k] && V[j] == "peer" && S[i] ~ /_off$/) continue # not run: the peer has no journal
        if (!runs[k]) { printf "| %s | %s | failed | | | | | | | | |\n", S[i], V[j]; continue }
        split("rps p50 p90 p99 bad err cpu hwm oth", names, " ")
        for (x in names) M[k, names[x]] = median(vals[k, names[x]])
        printf "| %s | %s | %.0f (%.0f–%.0f) | %.2f | %.2f | %.2f | %d | %d | %.1f | %.1f | %.0f |\n", S[i], V[j],
          M[k, "rps"], lo[k], hi[k], M[k, "p50"], M[k, "p90"], M[k, "p99"], M[k, "bad"], M[k, "err"], M[k, "cpu"], M[k, "hwm"], M[k, "oth"]
      }
      a = S[i] SUBSEP "checkoutd"; b = S[i] SUBSEP "peer"
      if (runs[a] && runs[b] && M[b, "rps"] > 0 && M[b, "p50"] > 0 && M[b, "p99"] > 0 && M[b, "cpu"] > 0 && M[b, "hwm"] > 0)
        printf "| %s | **checkoutd / peer** | **%.1f×** | %.2f× | %.2f× | %.2f× | | | %.2f× | %.2f× | |\n", S[i],
          M[a, "rps"] / M[b, "rps"], M[a, "p50"] / M[b, "p50"], M[a, "p90"] / M[b, "p90"], M[a, "p99"] / M[b, "p99"],
          M[a, "cpu"] / M[b, "cpu"], M[a, "hwm"] / M[b, "hwm"]
    }
  }' "$raw")

{
  echo "# make bench — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "$("$checkoutd" --version 2>/dev/null | head -n 1) ($(git -C "$root" describe --always --dirty 2>/dev/null || echo '?'))" \
    "vs the Python asyncio peer ($("$python" --version 2>&1), aiohttp $("$python" -c 'import aiohttp; print(aiohttp.__version__)'))"
  echo "on $(nproc) cores ($(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)," \
    "$(wrk --version 2>&1 | head -n 1 | awk '{ print $1, $2 }'), nginx stubs: $(nginx -v 2>&1 | sed 's/.*: //')"
  echo "$rounds round(s), each run ${warmup} s warm-up + ${seconds} s measured, wrk -t$threads; medians over the rounds."
  echo "The peer is one asyncio process (at most one core); checkoutd uses both. wrk, nginx and the server share the 2 cores."
  echo
  echo "$summary"
  echo
  echo "Bound of slow: 256 connections / 0.05 s = 5,120 checkouts/s. CPU = utime+stime of the server over the"
  echo "measured run / checkouts answered; peak RSS = VmHWM of a server started for that run. Other load = what the"
  echo "machine spent on anything but this server, wrk and the stubs during the run, in % of both cores: the noise."
  echo "Niced work counts too: with sched_autogroup, another session's nice 19 job still gets its group's fair share."
  if [ -n "$hold_notes" ]; then
    echo
    echo "Memory per in-flight checkout (hold: address and inventory answer at once, payment after 5 s, so every"
    echo "connection keeps one checkout in flight; (peak RSS - RSS when idle) / connections, median over the rounds):"
    echo "$hold_notes"
  fi
  if [ -n "$flaky_notes" ]; then
    echo
    echo "Success rate in flaky (payment stub: 503 for ~10 % of requests; flaky_r2 retries once):"
    echo "$flaky_notes"
  fi
  if [ -n "$cancel_notes" ]; then
    echo
    echo "Cancellation seen by the 5 s payment stub in fail (its access log):"
    echo "$cancel_notes"
  fi
  if [ -n "$stub_errors" ]; then
    echo
    echo "The nginx stubs logged errors (the stubs, not the servers, may have limited a run):"
    printf '%s\n' "$stub_errors" | sed 's/^/    /'
  fi
  echo
  echo "Raw rows: $(basename "$raw"); wrk output: $(basename "$wrklog")."
} >"$table"
cp "$table" "$outdir/latest.md"
# The picture of the same runs (gnuplot): bench/out/latency.png.
if command -v gnuplot >/dev/null 2>&1; then
  bash "$here/plot.sh" "$raw" "$outdir/latency.png" || say "plot.sh failed: no latency.png"
else
  say "gnuplot is missing (sh scripts/deps.sh bench): no latency.png"
fi
echo
cat "$table"
