#!/usr/bin/env bash
# bench/scaleout.sh — the scale-out test, with processes on loopback (no containers): 3 checkoutd
# replicas + fake-upstreams behind haproxy (Debian's package), a steady wrk load for ~20 s; at ~5 s
# one replica gets SIGTERM (graceful drain), at ~10 s another gets kill -9 (crash). Every answer's
# status is recorded (bench/scaleout.lua). Checks, exit status non-zero when one fails:
#   - no request lost to the client (connection error/reset/timeout) — required around the SIGTERM;
#     for the kill -9 the count is reported and explained (see RESULTS.md), the check is that
#     haproxy's retries turned it into answers;
#   - every answer is from checkoutd (JSON) and is a 200, except clean errors from checkoutd;
#   - the SIGTERMed replica exits 0 with its "stop" log line and stops receiving traffic: haproxy
#     (stats sampled every 0.5 s) marks it DOWN and sends it nothing more;
#   - throughput in the last seconds is back near the level before the kills (>= 50 %, it runs on
#     one replica instead of three, on 2 shared cores).
# Prints the report and writes it to bench/out/scaleout-<time>.md (bench/RESULTS.md, section
# "Scale-out", quotes a run and explains it).
#
# bash, not sh: arrays, $EPOCHREALTIME, /dev/tcp, here-strings.
# Usage: bench/scaleout.sh [BUILD_DIR]   (default build/release; `make scaleout` builds it first)
# Environment: SCALEOUT_SECONDS=20 SCALEOUT_CONNECTIONS=32 SCALEOUT_THREADS=2
#              SCALEOUT_LATENCY_MS=5 SCALEOUT_JITTER_MS=10 (fake upstream latency: keeps checkouts
#              in flight at the kills, so the drain has something to finish)
#              SCALEOUT_RETRY_ON="conn-failure empty-response 503" (haproxy retry-on)
# Starts only its own processes and stops them by PID; binds only 127.0.0.1; removes its temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build/release}
DURATION=${SCALEOUT_SECONDS:-20}
CONNS=${SCALEOUT_CONNECTIONS:-32}
THREADS=${SCALEOUT_THREADS:-2}
LAT=${SCALEOUT_LATENCY_MS:-5}
JIT=${SCALEOUT_JITTER_MS:-10}
RETRY_ON=${SCALEOUT_RETRY_ON:-conn-failure empty-response 503}
T_TERM=$((DURATION / 4)) # ~5 s of 20
T_KILL=$((DURATION / 2)) # ~10 s of 20

# Debian's haproxy and wrk: installed when missing and root, else the line to run is printed.
missing=""
for p in haproxy wrk curl; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scaleout: missing:$missing (as root: apt-get install -y$missing)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
[ -x "$B/checkoutd" ] && [ -x "$B/fake-upstreams" ] || {
  echo "scaleout: $B/checkoutd or $B/fake-upstreams missing (make first)" >&2
  exit 1
}

TMP=$(mktemp -d /tmp/checkoutd-scaleout.XXXXXX)
PIDS=() # every process started here, stopped by PID on exit
cleanup() {
  local rc=$? p
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ "$rc" -ne 0 ]; then
    echo "scaleout: failed; logs were in $TMP:" >&2
    tail -n 5 "$TMP"/*.err >&2 2>/dev/null
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_line FILE REGEX: the first matching line of a starting process's stdout (5 s at most).
wait_line() {
  local line
  for _ in $(seq 1 100); do
    line=$(grep -m1 -E "$2" "$1" 2>/dev/null || true)
    [ -n "$line" ] && { printf '%s\n' "$line"; return 0; }
    sleep 0.05
  done
  echo "scaleout: no '$2' in $1" >&2
  return 1
}
# A free loopback port for haproxy (it cannot report a port 0 it bound): below the ephemeral range
# (32768+), where port-0 binds of other processes land, and refused on connect.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
now() { echo "$EPOCHREALTIME"; }

# ---- fake upstreams (one process, three roles, ports picked by the kernel)
"$B/fake-upstreams" --host 127.0.0.1 --address-port 0 --inventory-port 0 --payment-port 0 \
  --latency-ms "$LAT" --jitter-ms "$JIT" >"$TMP/up.out" 2>"$TMP/up.err" &
PIDS+=($!)
wait_line "$TMP/up.out" '^ready' >/dev/null
port_of() { awk -v r="$1" '$1 == r && $2 == "listening" { n = split($4, a, ":"); print a[n] }' "$TMP/up.out"; }
A=$(port_of address) I=$(port_of inventory) P=$(port_of payment)

# ---- 3 checkoutd replicas, each on a port of its own choosing (printed as "listening on")
REP_PID=() REP_PORT=()
for r in 1 2 3; do
  CHECKOUTD_LISTEN=127.0.0.1:0 \
    CHECKOUTD_ADDRESS_URL="http://127.0.0.1:$A/validate" \
    CHECKOUTD_INVENTORY_URL="http://127.0.0.1:$I/check" \
    CHECKOUTD_PAYMENT_URL="http://127.0.0.1:$P/verify" \
    "$B/checkoutd" >"$TMP/r$r.out" 2>"$TMP/r$r.err" &
  REP_PID[r]=$!
  PIDS+=($!)
  REP_PORT[r]=$(wait_line "$TMP/r$r.out" '^listening on ' | awk -F: '{ print $NF }')
done

# ---- haproxy: the policy of docker/haproxy/haproxy.cfg, with the replicas' loopback ports.
FE=$(free_port)
ST=$(free_port)
cat >"$TMP/haproxy.cfg" <<EOF
global
    maxconn 4096
    log stdout format raw local0 info
defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    # Longer than deadline_ms (2000): checkoutd always answers first.
    timeout server 10s
    # Refused connection (replica gone, or draining: its listening socket is closed) or a
    # connection closed with no answer (the replica died, or closed an idle keep-alive connection
    # as the request went out): try another replica. 503 (shutting_down on a reused connection,
    # overloaded): checkoutd called no upstream for it, so another replica may take it safely.
    retry-on $RETRY_ON
    retries 3
    # Every retry goes to another replica (not only the last one), with no 1 s turn-around wait.
    option redispatch 1
    # Short inter + fall 1: a replica is out of rotation within ~0.5 s of /readyz saying 503.
    default-server inter 500ms fall 1 rise 2
frontend checkout
    bind 127.0.0.1:$FE
    default_backend checkoutd
backend checkoutd
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    server r1 127.0.0.1:${REP_PORT[1]} check
    server r2 127.0.0.1:${REP_PORT[2]} check
    server r3 127.0.0.1:${REP_PORT[3]} check
frontend stats
    bind 127.0.0.1:$ST
    stats enable
    stats uri /stats
EOF
haproxy -c -q -f "$TMP/haproxy.cfg"
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>"$TMP/haproxy.err" &
PIDS+=($!)
stats() { curl -s --max-time 1 "http://127.0.0.1:$ST/stats;csv" || true; }
for _ in $(seq 1 100); do
  [ "$(stats | awk -F, '$1 == "checkoutd" && $2 ~ /^r[123]$/ && $18 == "UP"' | wc -l)" = 3 ] && break
  sleep 0.1
done
[ "$(stats | awk -F, '$1 == "checkoutd" && $2 ~ /^r[123]$/ && $18 == "UP"' | wc -l)" = 3 ] || {
  echo "scaleout: haproxy does not see the 3 replicas UP" >&2
  exit 1
}

# ---- the run: wrk for DURATION s; a sampler of haproxy's per-replica counters; the two kills.
T0=$(now)
wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s bench/scaleout.lua \
  "http://127.0.0.1:$FE/checkout" >"$TMP/wrk.out" 2>&1 &
WRK=$!
PIDS+=("$WRK")
(
  # Every 0.5 s, per replica: t stot 2xx 5xx econ eresp wretr wredis status (haproxy CSV columns
  # 8 41 44 14 15 16 17 18: sessions sent to it, its 2xx and 5xx answers, connection errors,
  # response errors, retries and redispatches away from it, UP/DOWN).
  while kill -0 "$WRK" 2>/dev/null; do
    t=$(now)
    stats | awk -F, -v t="$t" -v t0="$T0" '$1 == "checkoutd" && $2 ~ /^r[123]$/ {
      printf "%.1f %s %s %s %s %s %s %s %s %s\n", t - t0, $2, $8, $41, $44, $14, $15, $16, $17, $18 }'
    sleep 0.5
  done
) >"$TMP/samples" &
PIDS+=($!)

sleep_until() { sleep "$(awk -v a="$T0" -v d="$1" -v n="$(now)" 'BEGIN { s = a + d - n; print (s > 0 ? s : 0) }')"; }
sleep_until "$T_TERM"
T_TERM_AT=$(awk -v a="$T0" -v n="$(now)" 'BEGIN { printf "%.2f", n - a }')
kill -TERM "${REP_PID[1]}"
t_exit=""
term_rc=0
# The drain is bounded by deadline_ms + 2 s; the wait also gives the exit status.
wait "${REP_PID[1]}" || term_rc=$?
t_exit=$(awk -v a="$T0" -v n="$(now)" 'BEGIN { printf "%.2f", n - a }')
sleep_until "$T_KILL"
T_KILL_AT=$(awk -v a="$T0" -v n="$(now)" 'BEGIN { printf "%.2f", n - a }')
kill -KILL "${REP_PID[2]}"
wait "${REP_PID[2]}" 2>/dev/null || true
wait "$WRK" || { cat "$TMP/wrk.out" >&2; echo "scaleout: wrk failed" >&2; exit 1; }
sleep 0.6 # one more sample after the end

# ---- counts
val() { sed -n "s/.*[ ]$1=\([0-9.]*\).*/\1/p" "$TMP/wrk.out" | head -n1; }
answered=$(val requests)
e_conn=$(val err_connect) e_read=$(val err_read) e_write=$(val err_write) e_to=$(val err_timeout)
lost=$((e_read + e_write + e_to))
sent=$((answered + lost)) # requests written; connect errors never carried one (reported apart)
by_status=$(awk '$1 == "@@status" { print $2, $3, $4 }' "$TMP/wrk.out" | sort)
n200=$(awk '$1 == "200" && $2 == "checkoutd" { print $3 }' <<<"$by_status")
n200=${n200:-0}
from_haproxy=$(awk '$2 == "haproxy" { n += $3 } END { print n + 0 }' <<<"$by_status")
# Per-replica checkouts from their own logs (one JSON line per checkout, 503s included).
rep_n() { grep -c '"event":"checkout"' "$TMP/r$1.err" || true; }
rep_503() { grep -c '"status":"shutting_down"' "$TMP/r$1.err" || true; }
# last R COL: the replica's last sampled value of a column (3 stot, 4 2xx, 5 5xx, 6 econ, 7 eresp,
# 8 wretr, 9 wredis, 10 status); at_down R COL: its value in the first sample showing it DOWN.
last() { awk -v r="$1" -v f="$2" '$2 == r { v = $f } END { print v }' "$TMP/samples"; }
at_down() { awk -v r="$1" -v f="$2" '$2 == r && $10 != "UP" && v == "" { v = $f } END { print v }' "$TMP/samples"; }
t_down() { awk -v r="$1" '$2 == r && $10 != "UP" { print $1; exit }' "$TMP/samples"; }
r1_after_down=$(($(last r1 3) - $(at_down r1 3)))
r2_after_down=$(($(last r2 3) - $(at_down r2 3)))
# haproxy's log, field 11 = actconn/feconn/beconn/srv_conn/retries: requests retried at least once,
# by when they arrived (field 2, the accept date), relative to the load's start.
t0_tod=$(date -d "@${T0%.*}" +%H:%M:%S | awk -F: -v f="0.${T0#*.}" '{ print $1 * 3600 + $2 * 60 + $3 + f }')
retried_at() { # FROM TO (seconds since the load started)
  awk -v t0="$t0_tod" -v a="$1" -v b="$2" '{
    split($11, c, "/"); if (c[5] == "0" || c[5] == "") next
    split($2, d, ":"); t = d[2] * 3600 + d[3] * 60 + d[4] - t0
    if (t >= a && t < b) n++ } END { print n + 0 }' "$TMP/haproxy.log"
}
retried=$(retried_at -1 999999)
retried_term=$(retried_at "$(awk -v t="$T_TERM_AT" 'BEGIN { print t - 0.2 }')" "$(awk -v t="$T_TERM_AT" 'BEGIN { print t + 2 }')")
retried_kill=$(retried_at "$(awk -v t="$T_KILL_AT" 'BEGIN { print t - 0.2 }')" "$(awk -v t="$T_KILL_AT" 'BEGIN { print t + 2 }')")
# The fake upstreams log client_closed_early when checkoutd's connection closes before their
# answer: here, only the upstream calls cut by the kill -9 (nothing else is cancelled in this load).
closed_early=$(grep -c '"client_closed_early"' "$TMP/up.err" || true)
closed_by_role=$(grep -o '"client_closed_early","role":"[a-z]*"' "$TMP/up.err" | sed 's/.*"role":"//; s/"//' | sort | uniq -c | awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')
up_stats=$(curl -s "http://127.0.0.1:$P/_fake/stats" || true)
pay_req=$(sed -n 's/.*"requests":\([0-9]*\).*/\1/p' <<<"$up_stats")
logged_ok=$(cat "$TMP"/r[123].err | grep -c '"status":"accepted"' || true)
stop_line=$(grep -c '"event":"stop"' "$TMP/r1.err" || true)
# In-flight checkouts r1 had to finish when SIGTERM came (its "draining" line).
drain_inflight=$(sed -n 's/.*"event":"draining".*"in_flight":\([0-9]*\).*/\1/p; s/.*"event":"draining".*"pending":\([0-9]*\).*/\1/p' "$TMP/r1.err" | head -n1)
# Throughput per second (client side), relative to T0.
t0s=${T0%.*}
series=$(awk -v t0="$t0s" '$1 == "@@second" { print $2 - t0, $3 }' "$TMP/wrk.out" | sort -n)
rate() { awk -v a="$1" -v b="$2" '$1 >= a && $1 < b { s += $2; n++ } END { printf "%d", n ? s / n : 0 }' <<<"$series"; }
before=$(rate 1 "$T_TERM")
between=$(rate $((T_TERM + 1)) "$T_KILL")
after=$(rate $((T_KILL + 2)) "$DURATION")
lat=$(sed -n 's/.*\(p50_ms=[0-9.]* p99_ms=[0-9.]* max_ms=[0-9.]*\).*/\1/p' "$TMP/wrk.out")

# ---- verdict
fails=()
[ "$term_rc" = 0 ] || fails+=("SIGTERMed replica exited $term_rc")
[ "$stop_line" -ge 1 ] || fails+=("no stop log line from the SIGTERMed replica")
[ "$lost" = 0 ] || fails+=("$lost requests lost to the client (read $e_read, write $e_write, timeout $e_to)")
[ "$e_conn" = 0 ] || fails+=("$e_conn connect errors to haproxy")
[ "$from_haproxy" = 0 ] || fails+=("$from_haproxy answers were haproxy's own error pages")
[ "$r1_after_down" = 0 ] || fails+=("the drained replica got $r1_after_down requests after haproxy marked it DOWN")
[ "$(last r1 10)" != UP ] || fails+=("haproxy still has the drained replica UP")
[ "$after" -ge $((before / 2)) ] || fails+=("throughput did not recover: $after/s after vs $before/s before")
verdict=PASS
[ "${#fails[@]}" = 0 ] || verdict="FAIL: ${fails[*]}"

# ---- report
stamp=$(date -u +%Y-%m-%dT%H:%MZ)
report=$(
  cat <<EOF
Run $stamp: 3 checkoutd replicas ($B) + fake-upstreams (latency ${LAT}+0..${JIT} ms) behind
haproxy $(haproxy -v | awk 'NR == 1 { print $3 }') (\`retry-on $RETRY_ON\`, \`retries 3\`, \`option redispatch 1\`,
\`option httpchk GET /readyz\`, \`inter 500ms fall 1\`), wrk -t$THREADS -c$CONNS for ${DURATION} s on $(nproc) cores
(shared with everything else running on the machine). SIGTERM to replica r1 at ${T_TERM_AT} s, kill -9 to r2 at
${T_KILL_AT} s. \`bench/scaleout.sh\`, verdict: **$verdict**.

| count | value |
|---|---|
| sent (answered + lost) | $sent |
| answered | $answered |
$(awk '{ printf "| answered %s by %s | %s |\n", $1, $2, $3 }' <<<"$by_status")
| **lost**: connection errors/resets/timeouts seen by the client | **$lost** (read $e_read, write $e_write, timeout $e_to; connect $e_conn) |
| answered by haproxy itself (its 502/503/504 pages) | $from_haproxy |
| requests haproxy retried: all / around the SIGTERM / around the kill -9 | $retried / $retried_term / $retried_kill |
| checkouts logged by r1 / r2 / r3 (of which 503 shutting_down) | $(rep_n 1) / $(rep_n 2) / $(rep_n 3) ($(rep_503 1) / $(rep_503 2) / $(rep_503 3)) |
| r1 (SIGTERM at ${T_TERM_AT} s): checkouts in flight, exit status, "stop" lines, exited at, haproxy DOWN at | ${drain_inflight:-?}, $term_rc, $stop_line, ${t_exit} s, $(t_down r1) s |
| r2 (kill -9 at ${T_KILL_AT} s): haproxy DOWN at | $(t_down r2) s |
| haproxy per replica r1 / r2 / r3: sessions (stot) | $(last r1 3) / $(last r2 3) / $(last r3 3) |
| ... 2xx / 5xx answers | $(last r1 4) / $(last r2 4) / $(last r3 4); $(last r1 5) / $(last r2 5) / $(last r3 5) |
| ... connection errors (econ) / response errors (eresp) | $(last r1 6) / $(last r2 6) / $(last r3 6); $(last r1 7) / $(last r2 7) / $(last r3 7) |
| ... retried / redispatched away from it (wretr / wredis) | $(last r1 8) / $(last r2 8) / $(last r3 8); $(last r1 9) / $(last r2 9) / $(last r3 9) |
| sessions sent to r1 / r2 after haproxy marked it DOWN | $r1_after_down / $r2_after_down |
| haproxy status at the end r1 / r2 / r3 | $(last r1 10) / $(last r2 10) / $(last r3 10) |
| upstream calls cut by the kill -9 (fake upstreams' client_closed_early) | $closed_early (${closed_by_role:-none}) |
| payment calls received / checkouts accepted (replica logs) / 200s the client got | ${pay_req:-?} / $logged_ok / $n200 |
| checkouts still in flight when wrk stopped (answered by checkoutd, never read) | $((logged_ok - n200)) |
| throughput before / between / after the kills (answers/s) | $before / $between / $after |
| client latency | $lat |

Answers per second (client side; s = seconds since the load started):

\`\`\`
$(awk '{ printf "%3d s %6d\n", $1, $2 }' <<<"$series")
\`\`\`

Per replica, as haproxy counted them every 0.5 s (sessions sent to it, its 2xx answers, status):

\`\`\`
$(awk '{ k = $1; if (!(k in seen)) { seen[k] = 1; order[++n] = k } v[k] = v[k] sprintf("  %s %6s %6s %-4s", $2, $3, $4, $10) }
  END { for (i = 1; i <= n; i += 2) printf "%5.1f s%s\n", order[i], v[order[i]] }' "$TMP/samples")
\`\`\`
EOF
)
mkdir -p bench/out
out=bench/out/scaleout-$(date -u +%Y%m%d-%H%M%S).md
printf '%s\n' "$report" >"$out"
printf '%s\n' "$report"
echo "scaleout: report in $out"
[ "${#fails[@]}" = 0 ]
