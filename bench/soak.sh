#!/usr/bin/env bash
# bench/soak.sh — the fault soak (`make soak`): checkoutd under a steady mixed load for SOAK_MINUTES
# while its upstreams are killed and restarted and a faulty upstream resets, hangs, answers 5xx and
# truncated bodies. Every answer is recorded and checked; RSS and open fds are sampled.
#
# What runs (all on 127.0.0.1, started here, stopped by PID):
#   - fake-upstreams (address, inventory, payment; latency SOAK_LATENCY_MS + 0..SOAK_JITTER_MS) on
#     three fixed ports below the ephemeral range, so that it can be restarted on the SAME ports;
#   - bench/soak_fault.py, a fourth validation "fraud" (field payment) that is healthy most of the
#     time and, in a window of SOAK_FAULT_S seconds out of every SOAK_FAULT_EVERY, resets, hangs,
#     answers 503 or sends a truncated body (the modes take turns);
#   - checkoutd (release), port 0, deadline_ms 2000, max_inflight 100000 (no 503 overloaded may
#     happen), timeout_ms: address/inventory 1000, payment 300 (tok_slow waits 5 s: a timeout), fraud 500;
#   - wrk -tSOAK_THREADS -cSOAK_CONNECTIONS --timeout 10s with bench/soak.lua for the whole run: per
#     connection it rotates accepted x3, out of stock, country ZZ, tok_error, tok_garbage, tok_slow,
#     and checks every answer (status, error group: see the head of soak.lua);
#   - chaos: every SOAK_KILL_MIN..SOAK_KILL_MAX s (random) fake-upstreams gets kill -9, stays down for
#     SOAK_DOWN_S s (checkoutd gets refused connections) and is started again on the same ports;
#     the run starts with an overture (a kill at 1 s, then each fault mode for 2 s) so that every
#     path has run before the end of the warm-up;
#   - a curl sample every second (the kinds in turn), checked at the end with bench/soak_check.py
#     (json: each validation exactly once across results/completed, errors, cancelled, ...; the exact
#     expected answer when every upstream was up and healthy around it);
#   - every 5 s: checkoutd's VmRSS, open fds, threads, established and CLOSE_WAIT sockets (ss), the
#     in-flight and connections gauges -> bench/out/soak-<time>.csv.
#
# Pass (exit 0) only if all hold:
#   - checkoutd never exits during the run, and exits 0 with its "stop" line on SIGTERM at the end;
#   - unanswered = 0: wrk's socket errors (connect, read, write, timeout) and curl failures;
#   - every answer is 200, 422, 502 or 504 (503 would be overload: max_inflight is far above the load);
#   - every answer passes soak.lua's checks and every curl sample passes soak_check.py;
#   - after warm-up (SOAK_WARMUP_S, default 20 % of the run, 15..120 s), RSS and fds are flat:
#     RSS at the end <= RSS after warm-up + SOAK_RSS_PCT % (10), the median fd count of the last
#     fifth of the run <= the median of the first fifth after warm-up + SOAK_FD_SLACK (32), and once
#     the load stopped (3 s later) no checkout is in flight, no socket is in CLOSE_WAIT, and every fd
#     beyond those of the start is an established upstream connection of libcurl's cache (+ 2);
#   - checkoutd's count (metrics) = the answers recorded here + at most one per wrk connection (those
#     in flight when wrk's time is up: wrk closes them unread);
#   - after every restart of the fake upstreams, 200s come back within 15 s.
# Reported without failing: checkouts counted in the metrics that have no log line.
# Writes bench/out/soak-<time>.md (report), .csv (samples), -wrk.txt, -samples.txt, -checkoutd.log
# (checkoutd's log without the per-checkout lines), and on failure the full logs' tails.
#
# Usage: bench/soak.sh [BUILD_DIR]   (default build/release; `make soak` builds it first)
# Environment: SOAK_MINUTES=10 (fractional allowed: 0.5; at least 30 s), SOAK_CONNECTIONS=64,
#   SOAK_THREADS=2, SOAK_LATENCY_MS=5, SOAK_JITTER_MS=20, SOAK_KILL_MIN=20, SOAK_KILL_MAX=40, SOAK_DOWN_S=2,
#   SOAK_FAULT_EVERY=30, SOAK_FAULT_S=8, SOAK_WARMUP_S, SOAK_RSS_PCT=10, SOAK_FD_SLACK=32,
#   SOAK_KEEP=1 (keep the temp dir with every log, for a post-mortem)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/release}
MINUTES=${SOAK_MINUTES:-10}
DURATION=$(awk -v m="$MINUTES" 'BEGIN { d = int(m * 60 + 0.5); print (d < 30 ? 30 : d) }')
CONNS=${SOAK_CONNECTIONS:-64}
THREADS=${SOAK_THREADS:-2}
LAT=${SOAK_LATENCY_MS:-5}
JIT=${SOAK_JITTER_MS:-20}
KMIN=${SOAK_KILL_MIN:-20}
KMAX=${SOAK_KILL_MAX:-40}
DOWN_S=${SOAK_DOWN_S:-2}
FAULT_EVERY=${SOAK_FAULT_EVERY:-30}
FAULT_S=${SOAK_FAULT_S:-8}
WARMUP=${SOAK_WARMUP_S:-$(awk -v d="$DURATION" 'BEGIN { w = int(d / 5); print (w > 120 ? 120 : w < 15 ? 15 : w) }')}
RSS_PCT=${SOAK_RSS_PCT:-10}
FD_SLACK=${SOAK_FD_SLACK:-32}
NAMES="address inventory payment fraud"
FAULT_MODES=(reset hang error truncate)
PY=/usr/bin/python3 # Debian's python (stdlib only)

# ---- what it needs: wrk, curl, python3, ss (iproute2); installed when missing and root.
missing=""
for p in wrk curl python3 iproute2 procps; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "soak: missing:$missing (as root: apt-get install -y$missing)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -x "$B/checkoutd" ] && [ -x "$B/fake-upstreams" ] || {
  echo "soak: $B/checkoutd or $B/fake-upstreams missing (make first)" >&2
  exit 1
}

TMP=$(mktemp -d /tmp/checkoutd-soak.XXXXXX)
mkdir -p bench/out "$TMP/samples"
STAMP=$(date -u +%Y%m%d-%H%M%S)
OUT=bench/out/soak-$STAMP
PIDS=()   # every long-lived process started here (not the fake upstreams: UP_PID, it changes)
UP_PID="" # the fake upstreams' current process
CPID=""   # checkoutd
cleanup() {
  local rc=$? p
  set +e
  touch "$TMP/stop"
  for p in "${PIDS[@]}" $UP_PID; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}" $UP_PID; do wait "$p" 2>/dev/null; done
  if [ "$rc" -ne 0 ] && [ -d "$TMP" ]; then
    # Evidence: the logs' ends next to the report.
    tail -n 2000 "$TMP/checkoutd.err" >"$OUT-checkoutd-tail.log" 2>/dev/null
    tail -n 200 "$TMP/up.err" >"$OUT-upstreams-tail.log" 2>/dev/null
    cp "$TMP/fault.err" "$OUT-fault.log" 2>/dev/null
    [ -e "$OUT-events.txt" ] || cp "$TMP/events" "$OUT-events.txt" 2>/dev/null
    echo "soak: failed (exit $rc); evidence in $OUT*" >&2
  fi
  if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: temp dir kept: $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms() { local t=$EPOCHREALTIME; echo $((10#${t/./} / 1000)); } # wall clock in ms
say() { echo "soak: $*" >&2; }
event() { echo "$(ms) $*" >>"$TMP/events"; }

# A port is taken when any socket of /proc/net/tcp{,6} has it as local port (any state).
port_taken() {
  local hex
  hex=$(printf ':%04X' "$1")
  awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# Below the ephemeral range (32768+): no outgoing connection (checkoutd's, wrk's) can take the
# port while the fake upstreams are down, so the restart can bind it again.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    port_taken "$p" || { echo "$p"; return; }
  done
}

# start_upstreams: fake-upstreams on $PA $PI $PP; sets UP_PID; returns 1 if it did not get ready.
start_upstreams() {
  "$B/fake-upstreams" --host 127.0.0.1 --address-port "$PA" --inventory-port "$PI" \
    --payment-port "$PP" --latency-ms "$LAT" --jitter-ms "$JIT" >"$TMP/up.out" 2>>"$TMP/up.err" &
  UP_PID=$!
  local _
  for _ in $(seq 1 200); do
    grep -q '^ready' "$TMP/up.out" 2>/dev/null && return 0
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.025
  done
  kill -KILL "$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  UP_PID=""
  return 1
}

# The chaos state, for the curl sampler and the CSV: "restarts up(0/1) fault_mode last_change_ms".
RESTARTS=0 UP=1 MODE=ok
set_state() {
  echo "$RESTARTS $UP $MODE $(ms)" >"$TMP/state.new"
  mv "$TMP/state.new" "$TMP/state"
}

# ---- fake upstreams, on fixed free ports (picked again if another process took one meanwhile)
: >"$TMP/up.err"
: >"$TMP/events"
for try in $(seq 1 20); do
  PA=$(free_port) PI=$(free_port) PP=$(free_port)
  [ "$PA" != "$PI" ] && [ "$PI" != "$PP" ] && [ "$PA" != "$PP" ] || continue
  start_upstreams && break
  say "fake-upstreams did not start on $PA/$PI/$PP (try $try)"
done
[ -n "$UP_PID" ] || { say "could not start fake-upstreams"; exit 1; }

# ---- the faulty fourth upstream
echo ok >"$TMP/fault.mode"
"$PY" bench/soak_fault.py 0 "$TMP/fault.mode" >"$TMP/fault.out" 2>"$TMP/fault.err" &
PIDS+=($!)
for _ in $(seq 1 200); do grep -q '^listening on ' "$TMP/fault.out" 2>/dev/null && break; sleep 0.025; done
PF=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$TMP/fault.out")
[ -n "$PF" ] || { say "soak_fault.py did not start: $(cat "$TMP/fault.err")"; exit 1; }

# ---- checkoutd
cat >"$TMP/checkoutd.json" <<EOF
{
  "listen": "127.0.0.1:0",
  "deadline_ms": 2000,
  "max_body_bytes": 65536,
  "max_inflight": 100000,
  "max_upstream_body_bytes": 1048576,
  "validations": [
    {"name": "address",   "field": "address", "url": "http://127.0.0.1:$PA/validate", "timeout_ms": 1000},
    {"name": "inventory", "field": "items",   "url": "http://127.0.0.1:$PI/check",    "timeout_ms": 1000},
    {"name": "payment",   "field": "payment", "url": "http://127.0.0.1:$PP/verify",   "timeout_ms": 300},
    {"name": "fraud",     "field": "payment", "url": "http://127.0.0.1:$PF/score",    "timeout_ms": 500}
  ]
}
EOF
"$B/checkoutd" --config "$TMP/checkoutd.json" >"$TMP/checkoutd.out" 2>"$TMP/checkoutd.err" &
CPID=$!
PIDS+=("$CPID")
for _ in $(seq 1 200); do grep -q '^listening on ' "$TMP/checkoutd.out" 2>/dev/null && break; sleep 0.025; done
CPORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$TMP/checkoutd.out")
[ -n "$CPORT" ] || { say "checkoutd did not start: $(tail -n 3 "$TMP/checkoutd.err")"; exit 1; }
URL="http://127.0.0.1:$CPORT/checkout"
METRICS="http://127.0.0.1:$CPORT/metrics"

# ---- bodies for the curl sampler: the same as soak.lua's
body_of() { # kind token sku country
  printf '{"order_id":"soak-%s","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"%s"},"items":[{"sku":"%s","quantity":1}],"payment":{"method":"card","token":"%s","amount":2598,"currency":"USD"}}' "$1" "$4" "$3" "$2"
}
body_of accepted tok_visa SKU-1 US >"$TMP/body-accepted.json"
body_of oos tok_visa OOS-7 US >"$TMP/body-oos.json"
body_of zz tok_visa SKU-1 ZZ >"$TMP/body-zz.json"
body_of error tok_error SKU-1 US >"$TMP/body-error.json"
body_of garbage tok_garbage SKU-1 US >"$TMP/body-garbage.json"
body_of slow tok_slow SKU-1 US >"$TMP/body-slow.json"

# A probe of each kind before the load: the wiring is right (else the soak would measure nonsense).
for k in accepted oos zz error garbage slow; do
  code=$(curl -s -o "$TMP/probe.body" -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
    --data-binary @"$TMP/body-$k.json" "$URL" || true)
  echo "p-$k 0 $k ${code:-000} 0 1" >>"$TMP/probe.idx"
  cp "$TMP/probe.body" "$TMP/samples/p-$k.body"
done
if ! "$PY" bench/soak_check.py "$TMP/probe.idx" "$TMP/samples" "$NAMES" >"$TMP/probe.check"; then
  cat "$TMP/probe.check" >&2
  say "the probes before the load did not get the expected answers"
  exit 1
fi

# ---- sampling: one CSV row every 5 s (and one before and one after the load)
metric() { awk -v m="$1" '$1 == m { print $2; exit }' "$TMP/metrics.$2" 2>/dev/null; }
sample_row() { # phase tag
  local t rss fds thr socks estab cw inflight openc total st
  t=$(awk -v a="$(ms)" -v b="$T0MS" 'BEGIN { printf "%.1f", (a - b) / 1000 }')
  if [ ! -r "/proc/$CPID/status" ]; then
    echo "$t,$1,dead,,,,,,,,,,"
    return
  fi
  rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$CPID/status" 2>/dev/null || true)
  thr=$(awk '$1 == "Threads:" { print $2 }' "/proc/$CPID/status" 2>/dev/null || true)
  # shellcheck disable=SC2012 # counting entries, names do not matter
  fds=$(ls "/proc/$CPID/fd" 2>/dev/null | wc -l || true)
  socks=$(ss -Htanp 2>/dev/null | grep "pid=$CPID," || true)
  estab=$(grep -c '^ESTAB' <<<"$socks" || true)
  cw=$(grep -c '^CLOSE-WAIT' <<<"$socks" || true)
  curl -s --max-time 2 "$METRICS" >"$TMP/metrics.$2" 2>/dev/null || true
  inflight=$(metric checkoutd_inflight_checkouts "$2")
  openc=$(metric checkoutd_open_connections "$2")
  total=$(awk '/^checkoutd_checkouts_total\{/ { s += $2 } END { print s + 0 }' "$TMP/metrics.$2" 2>/dev/null)
  read -r st <"$TMP/state" || st="? ? ? ?"
  # shellcheck disable=SC2086
  set -- "$1" $st
  echo "$t,$1,$rss,$fds,$thr,$estab,$cw,$inflight,$openc,$total,$2,$3,$4"
}
echo "t_s,phase,rss_kb,fds,threads,established,close_wait,inflight,open_connections,checkouts_total,upstream_restarts,upstreams_up,fault_mode" >"$OUT.csv"
set_state
T0MS=$(ms)
sample_row idle-start idle >>"$OUT.csv"

LOAD_START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg)
CPU0=$(awk '{ print $14 + $15 }' "/proc/$CPID/stat")

# ---- the load
T0MS=$(ms)
SOAK_NAMES="$NAMES" SOAK_BAD="$TMP/bad" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 10s \
  --latency -s bench/soak.lua "$URL" >"$TMP/wrk.out" 2>&1 &
WRK=$!
PIDS+=("$WRK")
(
  while [ ! -e "$TMP/stop" ]; do
    sample_row load loop >>"$OUT.csv"
    sleep 5
  done
) &
PIDS+=($!)
(
  kinds=(accepted oos zz error garbage slow)
  n=0
  while [ ! -e "$TMP/stop" ]; do
    k=${kinds[n % 6]}
    s1=$(cat "$TMP/state")
    read -r _ up1 mode1 ch1 <<<"$s1"
    t1=$(ms)
    rc=0
    code=$(curl -s -o "$TMP/samples/$n.body" -w '%{http_code}' --max-time 10 \
      -H 'Content-Type: application/json' --data-binary @"$TMP/body-$k.json" "$URL") || rc=$?
    s2=$(cat "$TMP/state")
    strict=0
    if [ "$s1" = "$s2" ] && [ "$up1" = 1 ] && [ "$mode1" = ok ] && [ $((t1 - ch1)) -ge 1000 ]; then
      strict=1
    fi
    echo "$n $(((t1 - T0MS) / 1000)) $k ${code:-000} $rc $strict" >>"$TMP/samples.idx"
    n=$((n + 1))
    sleep 1
  done
) &
PIDS+=($!)

# ---- chaos, in this shell: kills/restarts of the fake upstreams, fault windows of the fraud upstream
# The warm-up starts with an overture: one kill -9 at 1 s, then each fault mode for 2 s, so that
# every path has run once before the RSS/fd baseline is taken; then the regular schedule.
rand_between() { echo $(($1 + RANDOM % ($2 - $1 + 1))); }
next_kill=1
overture_ms=""  # when the overture's fault modes start (after its restart)
overture_end=0  # seconds: the regular fault windows start here
crashed=""
restart_fail=0
RESTART_TIMES=()
while kill -0 "$WRK" 2>/dev/null; do
  now=$(ms)
  t=$(((now - T0MS) / 1000))
  if ! kill -0 "$CPID" 2>/dev/null; then
    crashed="checkoutd exited at ${t} s"
    event "checkoutd-exited"
    kill -INT "$WRK" 2>/dev/null || true # wrk stops and still prints its counts
    break
  fi
  want=ok
  if [ -n "$overture_ms" ] && [ "$overture_end" = 0 ]; then
    i=$(((now - overture_ms) / 2000))
    if [ "$i" -lt "${#FAULT_MODES[@]}" ]; then
      want=${FAULT_MODES[i]}
    else
      overture_end=$((t + 1))
      next_kill=$((t + $(rand_between "$KMIN" "$KMAX")))
    fi
  elif [ "$overture_end" -gt 0 ] && [ "$t" -ge "$overture_end" ] && [ "$t" -lt $((DURATION - 5)) ] &&
    [ $((t % FAULT_EVERY)) -ge $((FAULT_EVERY - FAULT_S)) ]; then
    # Fault window: the last FAULT_S s of every FAULT_EVERY s, modes in turn; none in the last 5 s.
    want=${FAULT_MODES[$(((t / FAULT_EVERY) % ${#FAULT_MODES[@]}))]}
  fi
  if [ "$want" != "$MODE" ]; then
    if [ "$want" = ok ]; then
      echo ok >"$TMP/fault.mode"
      MODE=ok
      set_state
    else
      MODE=$want
      set_state
      echo "$want" >"$TMP/fault.mode"
    fi
    event "fault $want"
  fi
  # Kill -9 and restart on the same ports; none in the last 5 s (the run ends healthy).
  if [ "$t" -ge "$next_kill" ] && [ "$t" -lt $((DURATION - 5)) ]; then
    UP=0
    set_state
    kill -KILL "$UP_PID"
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=""
    event "kill"
    sleep "$DOWN_S"
    ok=0
    for _ in $(seq 1 25); do
      if start_upstreams; then ok=1; break; fi
      sleep 0.2
    done
    if [ "$ok" = 0 ]; then
      restart_fail=1
      event "restart-failed"
      say "fake-upstreams could not be restarted on $PA/$PI/$PP"
      kill -INT "$WRK" 2>/dev/null || true # wrk stops and still prints its counts
      break
    fi
    RESTARTS=$((RESTARTS + 1))
    UP=1
    set_state
    RESTART_TIMES+=("$(ms)")
    event "up"
    if [ -z "$overture_ms" ]; then
      overture_ms=$(ms)
      next_kill=999999 # set when the overture ends
    else
      next_kill=$((t + DOWN_S + $(rand_between "$KMIN" "$KMAX")))
    fi
  fi
  sleep 0.5
done
wrk_rc=0
wait "$WRK" || wrk_rc=$?
touch "$TMP/stop"
LOAD_END_MS=$(ms)
LOADAVG1=$(cut -d' ' -f1-3 /proc/loadavg)
if [ "$MODE" != ok ]; then echo ok >"$TMP/fault.mode"; MODE=ok; set_state; fi
sleep 3 # past every timeout: whatever wrk left in flight is finished
sample_row idle-end idle >>"$OUT.csv"
cp "$TMP/metrics.idle" "$TMP/metrics.end" 2>/dev/null || true
CPU1=$(awk '{ print $14 + $15 }' "/proc/$CPID/stat" 2>/dev/null || echo "$CPU0")

# ---- stop checkoutd: SIGTERM, it must exit 0 with its stop line
term_rc="-"
alive_at_end=0
if [ -z "$crashed" ] && kill -0 "$CPID" 2>/dev/null; then
  alive_at_end=1
  kill -TERM "$CPID"
  term_rc=0
  wait "$CPID" || term_rc=$?
else
  wait "$CPID" 2>/dev/null || term_rc=$?
  crashed=${crashed:-"checkoutd exited during the run"}
  crashed="$crashed (status $term_rc)"
fi
stop_lines=$(grep -c '"event":"stop"' "$TMP/checkoutd.err" || true)
fault_stats=$(curl -s --max-time 2 "http://127.0.0.1:$PF/_soak/stats" || true)

# ---- counts
cp "$TMP/wrk.out" "$OUT-wrk.txt"
val() { sed -n "s/^@@total.*[ ]$1=\([0-9.]*\).*/\1/p" "$TMP/wrk.out" | head -n1; }
answered=$(val requests)
answered=${answered:-0}
e_conn=$(val err_connect) e_read=$(val err_read) e_write=$(val err_write) e_to=$(val err_timeout)
e_conn=${e_conn:-0} e_read=${e_read:-0} e_write=${e_write:-0} e_to=${e_to:-0}
unanswered=$((e_conn + e_read + e_write + e_to))
by_status=$(awk '$1 == "@@status" { print $2, $3 }' "$TMP/wrk.out" | sort -n)
n_of() { awk -v c="$1" '$1 == c { print $2 }' <<<"$by_status"; }
n_contract=$(awk '$1 == 200 || $1 == 422 || $1 == 502 || $1 == 504 { s += $2 } END { print s + 0 }' <<<"$by_status")
n_other=$((answered - n_contract))
bad_total=$(awk '$1 == "@@bad" { s += $3 } END { print s + 0 }' "$TMP/wrk.out")
bad_lines=$(awk '$1 == "@@bad" { printf "%s %s; ", $2, $3 }' "$TMP/wrk.out")
kind_table=$(awk '$1 == "@@kind" { n[$2, $3] += $4; k[$2] = 1; c[$3] = 1 }
  END {
    split("accepted oos zz error garbage slow ?", order, " ")
    printf "| kind (order_id) | body |"; nc = 0
    for (x in c) codes[++nc] = x
    for (i = 1; i <= nc; i++) for (j = i + 1; j <= nc; j++) if (codes[j] + 0 < codes[i] + 0) { t = codes[i]; codes[i] = codes[j]; codes[j] = t }
    for (i = 1; i <= nc; i++) printf " %s |", codes[i]
    printf "\n|---|---|"; for (i = 1; i <= nc; i++) printf "---|"; printf "\n"
    desc["accepted"] = "tok_visa, SKU-1, US"; desc["oos"] = "sku OOS-7"; desc["zz"] = "country ZZ"
    desc["error"] = "tok_error"; desc["garbage"] = "tok_garbage"; desc["slow"] = "tok_slow (payment timeout_ms 300)"; desc["?"] = "no order_id"
    for (o = 1; o <= 7; o++) { kk = order[o]; if (!(kk in k)) continue
      printf "| %s | %s |", kk, desc[kk]; for (i = 1; i <= nc; i++) printf " %d |", n[kk, codes[i]]; printf "\n" }
  }' "$TMP/wrk.out")
lat=$(sed -n 's/^@@total.*\(p50_ms=[0-9.]*\) \(p99_ms=[0-9.]*\) \(max_ms=[0-9.]*\).*/\1 \2 \3/p' "$TMP/wrk.out")
if ls "$TMP"/bad-*.txt >/dev/null 2>&1; then cat "$TMP"/bad-*.txt >"$OUT-bad-answers.txt"; fi

# Answers per minute (client side), by status.
t0s=$((T0MS / 1000))
per_minute=$(awk -v t0="$t0s" '$1 == "@@second" { m = int(($2 - t0) / 60); n[m, $3] += $4; mm[m] = 1; c[$3] = 1; if (m > maxm) maxm = m }
  END {
    nc = 0; for (x in c) codes[++nc] = x
    for (i = 1; i <= nc; i++) for (j = i + 1; j <= nc; j++) if (codes[j] + 0 < codes[i] + 0) { t = codes[i]; codes[i] = codes[j]; codes[j] = t }
    printf "| minute |"; for (i = 1; i <= nc; i++) printf " %s |", codes[i]; printf " all |\n|---|"
    for (i = 1; i <= nc; i++) printf "---|"; printf "---|\n"
    for (m = 0; m <= maxm; m++) { if (!(m in mm)) continue; s = 0
      printf "| %d |", m + 1; for (i = 1; i <= nc; i++) { printf " %d |", n[m, codes[i]]; s += n[m, codes[i]] } printf " %d |\n", s }
  }' "$TMP/wrk.out")

# After each restart: seconds until the first 200 (the fake upstreams are back; a fault window of
# the fraud upstream can delay it by up to SOAK_FAULT_S).
ok_seconds=$(awk '$1 == "@@second" && $3 == 200 && $4 > 0 { print $2 }' "$TMP/wrk.out" | sort -n)
recover=()
recover_fail=0
for r in "${RESTART_TIMES[@]}"; do
  rs=$((r / 1000))
  first=$(awk -v r="$rs" '$1 >= r { print $1 - r; exit }' <<<"$ok_seconds")
  if [ -z "$first" ]; then
    [ $((LOAD_END_MS / 1000 - rs)) -lt 15 ] || recover_fail=$((recover_fail + 1))
    recover+=("-")
  else
    [ "$first" -le 15 ] || recover_fail=$((recover_fail + 1))
    recover+=("$first")
  fi
done

# curl samples
samples_rc=0
"$PY" bench/soak_check.py "$TMP/samples.idx" "$TMP/samples" "$NAMES" >"$OUT-samples.txt" || samples_rc=$?
samples_line=$(grep '^@@samples' "$OUT-samples.txt" || echo "@@samples total=0 strict=0 bad=?")
s_total=$(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$samples_line")
s_strict=$(sed -n 's/.*strict=\([0-9]*\).*/\1/p' <<<"$samples_line")
s_bad=$(sed -n 's/.*bad=\([0-9?]*\).*/\1/p' <<<"$samples_line")
if [ "$samples_rc" != 0 ]; then
  mkdir -p "$OUT-bad-samples"
  grep -o '^BAD sample [0-9]*' "$OUT-samples.txt" | awk '{ print $3 }' | while read -r n; do
    cp "$TMP/samples/$n.body" "$OUT-bad-samples/" 2>/dev/null || true
  done
fi

# RSS and fds: start (idle, before the load), after warm-up, end of the load, idle after the load.
csv_at() { # phase-filter column -> value
  awk -F, -v c="$2" -v w="$WARMUP" -v f="$1" 'NR > 1 {
      if (f == "start" && $2 == "idle-start") { v = $c; exit }
      if (f == "warm" && $2 == "load" && $1 + 0 >= w && $3 != "dead") { v = $c; exit }
      if (f == "end" && $2 == "load" && $3 != "dead") v = $c
      if (f == "idle" && $2 == "idle-end") v = $c
    } END { print v }' "$OUT.csv"
}
csv_max() { # column from to (seconds of load)
  awk -F, -v c="$1" -v a="$2" -v b="$3" 'NR > 1 && $2 == "load" && $1 + 0 >= a && $1 + 0 < b && $3 != "dead" && $c + 0 > m { m = $c + 0 } END { print m + 0 }' "$OUT.csv"
}
rss_start=$(csv_at start 3) rss_warm=$(csv_at warm 3) rss_end=$(csv_at end 3) rss_idle=$(csv_at idle 3)
fd_start=$(csv_at start 4) fd_warm=$(csv_at warm 4) fd_end=$(csv_at end 4) fd_idle=$(csv_at idle 4)
thr_start=$(csv_at start 5) thr_end=$(csv_at end 5)
est_start=$(csv_at start 6) est_idle=$(csv_at idle 6)
cw_idle=$(csv_at idle 7)
inflight_idle=$(csv_at idle 8)
rss_max=$(csv_max 3 "$WARMUP" 999999)
fifth=$(((DURATION - WARMUP) / 5))
[ "$fifth" -ge 10 ] || fifth=10
csv_median() { # column from to (seconds of load)
  awk -F, -v c="$1" -v a="$2" -v b="$3" 'NR > 1 && $2 == "load" && $1 + 0 >= a && $1 + 0 < b && $3 != "dead" { print $c + 0 }' "$OUT.csv" |
    sort -n | awk '{ v[NR] = $1 } END { print NR ? (NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)) : 0 }'
}
fd_med_first=$(csv_median 4 "$WARMUP" $((WARMUP + fifth)))
fd_med_last=$(csv_median 4 $((DURATION - fifth)) 999999)
rss_half=$(csv_at end 3)
rss_mid=$(awk -F, -v m=$(((WARMUP + DURATION) / 2)) 'NR > 1 && $2 == "load" && $1 + 0 >= m && $3 != "dead" { print $3; exit }' "$OUT.csv")
cw_max=$(csv_max 7 0 999999)
rss_bound=$(awk -v w="${rss_warm:-0}" -v p="$RSS_PCT" 'BEGIN { printf "%d", w * (1 + p / 100) }')
# RSS slope after warm-up (least squares, kB per minute).
rss_slope=$(awk -F, -v w="$WARMUP" 'NR > 1 && $2 == "load" && $1 + 0 >= w && $3 != "dead" { n++; x = $1 / 60; sx += x; sy += $3; sxx += x * x; sxy += x * $3 }
  END { d = n * sxx - sx * sx; printf "%.1f", (n > 2 && d > 0) ? (n * sxy - sx * sy) / d : 0 }' "$OUT.csv")
rows=$(awk -F, 'NR > 1 && $2 == "load"' "$OUT.csv" | wc -l)

# checkoutd's own counts at the end (metrics scraped 3 s after the load).
mcount() { awk -v o="$1" 'index($0, "checkoutd_checkouts_total{outcome=\"" o "\"}") == 1 { print $2 }' "$TMP/metrics.end" 2>/dev/null; }
m_acc=$(mcount accepted) m_rej=$(mcount rejected) m_fail=$(mcount failed) m_over=$(mcount overloaded)
m_groups=$((${m_acc:-0} + ${m_rej:-0} + ${m_fail:-0}))
# What checkoutd counted beyond the answers recorded here: the checkouts wrk had in flight when its
# time was up (it closes those connections without reading them), at most one per connection.
abandoned=$((m_groups - answered - ${s_total:-0} - 6))
upstream_table=$(awk '/^checkoutd_upstream_requests_total\{/ {
    match($0, /validation="[a-z_]+"/); v = substr($0, RSTART + 12, RLENGTH - 13)
    match($0, /outcome="[a-z_]+"/); o = substr($0, RSTART + 9, RLENGTH - 10)
    n[v, o] = $2; vs[v] = 1 }
  /^checkoutd_validations_cancelled_total\{/ { match($0, /validation="[a-z_]+"/); v = substr($0, RSTART + 12, RLENGTH - 13); n[v, "cancelled"] = $2 }
  END {
    split("ok rejected upstream_error invalid_response transport timeout cancelled", os, " ")
    printf "| validation |"; for (i = 1; i <= 7; i++) printf " %s |", os[i]; printf "\n|---|"
    for (i = 1; i <= 7; i++) printf "---|"; printf "\n"
    split("address inventory payment fraud", vv, " ")
    for (j = 1; j <= 4; j++) { v = vv[j]; if (!(v in vs)) continue; printf "| %s |", v
      for (i = 1; i <= 7; i++) printf " %d |", n[v, os[i]]; printf "\n" }
  }' "$TMP/metrics.end" 2>/dev/null || true)
closed_early=$(grep -c '"client_closed_early"' "$TMP/up.err" || true)
log_lines=$(grep -c '"event":"checkout"' "$TMP/checkoutd.err" || true)
log_bad=$(grep -vc '^{.*}$' "$TMP/checkoutd.err" || true)
grep -v '"event":"checkout"' "$TMP/checkoutd.err" >"$OUT-checkoutd.log" || true
log_warn=$(grep -c '"level":"\(warn\|error\)"' "$OUT-checkoutd.log" || true)
cpu_us=$(awk -v d=$((CPU1 - CPU0)) -v hz="$(getconf CLK_TCK)" -v n="$m_groups" 'BEGIN { printf "%.0f", n ? d * 1e6 / hz / n : 0 }')
fault_counts=$(sed -n 's/.*"by_mode": *{\([^}]*\)}.*/\1/p' <<<"$fault_stats" | tr -d '"')
hang_closed=$(sed -n 's/.*"hang_closed": *\([0-9]*\).*/\1/p' <<<"$fault_stats")
fault_windows=$(grep -c ' fault \(reset\|hang\|error\|truncate\)$' "$TMP/events" || true)
awk -v t0="$T0MS" '{ printf "%8.1f s  %s\n", ($1 - t0) / 1000, substr($0, index($0, " ") + 1) }' "$TMP/events" >"$OUT-events.txt"

# ---- verdict
fails=()
[ -z "$crashed" ] || fails+=("$crashed")
[ "$alive_at_end" = 1 ] && [ "$term_rc" = 0 ] || fails+=("checkoutd did not exit 0 on SIGTERM at the end (status $term_rc)")
[ "$alive_at_end" = 0 ] || [ "$stop_lines" -ge 1 ] || fails+=("no stop log line")
[ "$wrk_rc" = 0 ] || fails+=("wrk exited $wrk_rc")
[ "$answered" -gt 0 ] || fails+=("no answer recorded")
[ "$unanswered" = 0 ] || fails+=("$unanswered unanswered (connect $e_conn, read $e_read, write $e_write, timeout $e_to)")
[ "$alive_at_end" = 0 ] || { [ "$abandoned" -ge 0 ] && [ "$abandoned" -le "$CONNS" ]; } || fails+=("checkoutd counted $m_groups checkouts: $abandoned more than the answers recorded (0..$CONNS expected)")
[ "$n_other" = 0 ] || fails+=("$n_other answers with a status outside 200/422/502/504")
[ "$bad_total" = 0 ] || fails+=("$bad_total answers failed soak.lua's checks ($bad_lines)")
[ "$samples_rc" = 0 ] || fails+=("$s_bad curl samples failed soak_check.py")
[ "${s_total:-0}" -gt 0 ] || fails+=("no curl samples")
[ "$restart_fail" = 0 ] || fails+=("fake-upstreams could not be restarted on its ports")
[ "$recover_fail" = 0 ] || fails+=("$recover_fail restarts not followed by a 200 within 15 s")
if [ -n "$rss_warm" ] && [ -n "$rss_end" ]; then
  [ "$rss_end" -le "$rss_bound" ] || fails+=("RSS grew: $rss_end kB at the end > $rss_bound kB (after warm-up $rss_warm kB + $RSS_PCT %)")
  [ "$fd_med_last" -le $((fd_med_first + FD_SLACK)) ] || fails+=("fds grew: median $fd_med_last in the last fifth > $fd_med_first (first fifth after warm-up) + $FD_SLACK")
else
  fails+=("no RSS/fd samples after warm-up")
fi
# Once idle, every fd beyond those at the start must be an upstream connection kept in libcurl's
# cache (ESTABLISHED): fds - established may not exceed its value at the start (+ 2).
# Every sample these checks read must be there and a number: a missing one (checkoutd dead, /proc
# or the metrics unreadable) fails the soak instead of skipping the fd-leak and in-flight checks.
idle_ok=1
for v in "$fd_start" "$est_start" "$fd_idle" "$est_idle" "$cw_idle" "$inflight_idle"; do
  [[ "$v" =~ ^[0-9]+$ ]] || idle_ok=0
done
if [ "$idle_ok" = 1 ]; then
  other_start=$((fd_start - est_start)) other_idle=$((fd_idle - est_idle))
  [ "$other_idle" -le $((other_start + 2)) ] || fails+=("fds after the load: $fd_idle, of which $other_idle not established connections > $other_start at the start + 2")
  [ "$cw_idle" = 0 ] || fails+=("$cw_idle sockets in CLOSE_WAIT after the load (peer closed, checkoutd did not)")
  [ "$inflight_idle" = 0 ] || fails+=("$inflight_idle checkouts still in flight 3 s after the load")
else
  fails+=("a sample is missing (at the start: fds '$fd_start', established '$est_start'; idle after the load: fds '$fd_idle', established '$est_idle', CLOSE_WAIT '$cw_idle', in flight '$inflight_idle'): the fd-leak and in-flight checks cannot run")
fi
verdict=PASS
# Not a failure of the soak (the pass rules are above), but reported: checkoutd counts a checkout in
# its metrics when the group ends, and writes its log line only when the answer is handed to the
# connection, so a checkout whose client has gone by then may have no log line.
log_gap=$((m_groups - log_lines))
log_gap_note=""
sent_row="$m_groups = $answered answered to wrk + ${s_total:-0} curl samples + 6 probes + $abandoned in flight when wrk's time was up (not read by wrk)"
if [ "$alive_at_end" = 0 ]; then
  # No final scrape of the metrics: the counts that come from them are not known.
  log_gap=0 log_gap_note=" (unknown: checkoutd died)" sent_row="unknown (checkoutd died; answered to wrk: $answered)"
fi
[ "$log_gap" = 0 ] || log_gap_note=" (**WARN**: at most $abandoned clients had gone before their answer)"
[ "${#fails[@]}" = 0 ] || verdict="FAIL: $(printf '%s; ' "${fails[@]}")"

# ---- report
restart_list=""
for i in "${!RESTART_TIMES[@]}"; do
  restart_list="$restart_list$(((RESTART_TIMES[i] - T0MS) / 1000)) s (+${recover[i]} s), "
done
report=$(
  cat <<EOF
Soak run $LOAD_START, $(awk -v d="$DURATION" 'BEGIN { printf "%.1f", d / 60 }') min (\`bench/soak.sh\`, SOAK_MINUTES=$MINUTES): verdict **$verdict**

checkoutd $("$B/checkoutd" --version 2>/dev/null | head -n1 | awk '{ print $NF }') ($(git describe --always --dirty 2>/dev/null || echo '?')), $B, on $(nproc) cores
shared with the rest of the machine (load average $LOADAVG0 before, $LOADAVG1 at the end).
wrk -t$THREADS -c$CONNS --timeout 10s; fake-upstreams latency $LAT + 0..$JIT ms, killed -9 every
$KMIN–$KMAX s and restarted on the same ports after $DOWN_S s; fraud upstream (soak_fault.py) faulty
$FAULT_S s of every $FAULT_EVERY s (reset, hang, 503, truncated body in turn). deadline_ms 2000,
timeout_ms address/inventory 1000, payment 300, fraud 500; max_inflight 100000.

| count | value |
|---|---|
| checkouts sent = counted by checkoutd (metrics) | $sent_row |
| requests answered (wrk) | $answered |
| answered 200 / 422 / 502 / 504 | $(n_of 200 || true) / $(n_of 422 || true) / $(n_of 502 || true) / $(n_of 504 || true) |
| answered with another status | $n_other |
| **unanswered** (wrk socket errors: connect/read/write/timeout) | **$unanswered** ($e_conn/$e_read/$e_write/$e_to) |
| answers failing the per-answer checks (soak.lua) | $bad_total ${bad_lines:+($bad_lines)} |
| curl samples checked with json (soak_check.py): total / strict / bad | $s_total / $s_strict / $s_bad |
| checkoutd's own count: accepted + rejected + failed; overloaded | ${m_acc:-?} + ${m_rej:-?} + ${m_fail:-?}; ${m_over:-?} |
| checkout log lines / non-JSON log lines / warn+error lines | $log_lines / $log_bad / $log_warn |
| checkouts counted in the metrics without a log line${log_gap_note} | $log_gap |
| fake-upstreams restarts (kill -9) at s (+ s to the first 200) | $RESTARTS: ${restart_list%, } |
| fraud fault windows / its answers by mode / hung requests closed by checkoutd | $fault_windows / ${fault_counts:-?} / ${hang_closed:-?} |
| upstream calls cut by checkoutd (fake upstreams' client_closed_early) | $closed_early |
| client latency | $lat |
| checkoutd CPU per checkout | $cpu_us µs |
| checkoutd exit on SIGTERM at the end / "stop" lines | $term_rc / $stop_lines |

| checkoutd | start (idle) | after warm-up (${WARMUP} s) | end of load | max after warm-up | 3 s after the load (idle) |
|---|---|---|---|---|---|
| RSS kB | $rss_start | $rss_warm | $rss_end | $rss_max | $rss_idle |
| open fds | $fd_start | $fd_warm | $fd_end | $(csv_max 4 "$WARMUP" 999999) | $fd_idle |
| of the fds: established TCP connections | $est_start | $(csv_at warm 6) | $(csv_at end 6) | | $est_idle |
| sockets in CLOSE_WAIT | | | | $cw_max (whole run) | $cw_idle |
| threads | $thr_start | | $thr_end | | |
| checkouts in flight | | | | | ${inflight_idle:-?} |

Bounds: RSS at the end <= after warm-up + $RSS_PCT % = $rss_bound kB (slope after warm-up: $rss_slope kB/min);
median of the fds in the last fifth of the run ($fd_med_last) <= median in the first fifth after warm-up ($fd_med_first) + $FD_SLACK
(the count under load swings with connection churn: see the CSV); RSS in the second half after warm-up: ${rss_mid:-?} -> $rss_half kB;
3 s after the load, fds that are not established connections (libcurl's cache) <= start + 2 ($other_idle vs $other_start),
no socket in CLOSE_WAIT and no checkout in flight. $rows samples, every 5 s: $(basename "$OUT.csv").

Answers by kind (client side):

$kind_table

Answers per minute:

$per_minute

Upstream calls as checkoutd counted them (metrics at the end):

$upstream_table
EOF
)
printf '%s\n' "$report" >"$OUT.md"
printf '%s\n' "$report"
echo "soak: report in $OUT.md"
[ "$log_gap" = 0 ] || say "WARN: $log_gap checkouts counted in the metrics have no log line (clients that had gone before their answer)"
[ "${#fails[@]}" = 0 ]
