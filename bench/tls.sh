#!/usr/bin/env bash
# bench/tls.sh — what listen's tls (v1.3) costs: the fast scenario of bench/bench.sh (every
# validation -> the nginx stub that answers 200 at once, wrk with bench/checkout.lua) against one
# checkoutd over plain HTTP and over HTTPS, each with keep-alive (the steady state: TLS records
# only) and without (wrk -H 'Connection: close': one TCP connection, and over HTTPS one full
# handshake, per checkout — the handshake rate). A throwaway CA and an RSA-2048 server certificate
# are made with the openssl CLI. One round, short runs: on the shared 2-core machine the figures
# are approximate; compare the rows of one run with each other.
#
# Usage: bench/tls.sh [BUILD_DIR]   (default build/release)
# Environment: BENCH_SECONDS=10 measured, BENCH_WARMUP=2, BENCH_CONNECTIONS=64, BENCH_THREADS=2,
#              BENCH_TLS_KEY=rsa (RSA-2048) or ec (ECDSA P-256: a much cheaper handshake),
#              BENCH_MODES (default "http keep-alive,https keep-alive,http close,https close"),
#              BENCH_PEERS (default ../shared/peers: the nginx stubs' start.sh / stop.sh)
# Prints one Markdown table: mode, checkouts/s, p50/p99 ms, checkoutd CPU µs per checkout, errors.
set -eu
set -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
peers=${BENCH_PEERS:-$root/../shared/peers}
build=${1:-build/release}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
checkoutd="$build/checkoutd"
dur=${BENCH_SECONDS:-10} warm=${BENCH_WARMUP:-2} conns=${BENCH_CONNECTIONS:-64} threads=${BENCH_THREADS:-2}
for t in wrk openssl curl; do command -v "$t" >/dev/null || { echo "tls.sh: $t is not installed" >&2; exit 1; }; done
[ -x "$checkoutd" ] || { echo "tls.sh: no $checkoutd" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/checkoutd-tls.XXXXXX")
chmod 755 "$tmp" # nginx's workers (nobody) must reach their prefix
srv_pid="" stubs_up=0
cleanup() {
  local rc=$?
  [ -z "$srv_pid" ] || { kill -TERM "$srv_pid" 2>/dev/null; wait "$srv_pid" 2>/dev/null; } || true
  [ "$stubs_up" = 0 ] || bash "$peers/upstreams/stop.sh" "$tmp/stubs" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT

case ${BENCH_TLS_KEY:-rsa} in
  rsa) newkey=(-newkey rsa:2048) ;;
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  *) echo "tls.sh: BENCH_TLS_KEY is rsa or ec" >&2; exit 2 ;;
esac
(cd "$tmp" && openssl req -x509 "${newkey[@]}" -nodes -keyout ca.key -out ca.pem -days 1 -subj '/CN=bench CA' &&
  openssl req "${newkey[@]}" -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' &&
  printf 'subjectAltName=IP:127.0.0.1\n' >server.ext &&
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 \
    -extfile server.ext) >"$tmp/openssl.log" 2>&1 || { echo "tls.sh: openssl failed" >&2; exit 1; }

for _ in $(seq 20); do
  base=$((20000 + (RANDOM % 2000) * 6))
  if bash "$peers/upstreams/start.sh" "$base" "$tmp/stubs" >"$tmp/stubs.out" 2>&1; then stubs_up=1; break; fi
done
[ "$stubs_up" = 1 ] || { echo "tls.sh: the nginx stubs did not start" >&2; exit 1; }

write_config() { # file tls(0/1)
  local t=""
  [ "$2" = 1 ] && t="\"tls\": {\"cert_file\": \"$tmp/server.pem\", \"key_file\": \"$tmp/server.key\"},"
  cat >"$1" <<JSON
{"listen": "127.0.0.1:0", "deadline_ms": 10000, "max_inflight": 100000, $t
 "validations": [
  {"name": "address", "field": "address", "url": "http://127.0.0.1:$base/validate", "timeout_ms": 10000},
  {"name": "inventory", "field": "items", "url": "http://127.0.0.1:$base/check", "timeout_ms": 10000},
  {"name": "payment", "field": "payment", "url": "http://127.0.0.1:$base/verify", "timeout_ms": 10000}]}
JSON
}

cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo $((${12} + ${13}))
}
hz=$(getconf CLK_TCK)

echo "| mode | checkouts/s | p50 ms | p99 ms | checkoutd CPU µs/checkout | non-2xx + socket errors |"
echo "|---|---|---|---|---|---|"
IFS=, read -r -a modes <<<"${BENCH_MODES:-http keep-alive,https keep-alive,http close,https close}"
for mode in "${modes[@]}"; do
  tls=0 scheme=http hdr=()
  case "$mode" in https*) tls=1 scheme=https ;; esac
  case "$mode" in *close) hdr=(-H "Connection: close") ;; esac
  write_config "$tmp/c.json" "$tls"
  "$checkoutd" --config "$tmp/c.json" --log-level warn >"$tmp/srv.out" 2>"$tmp/srv.err" &
  srv_pid=$!
  port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/^listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/srv.out" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.05
  done
  url="$scheme://127.0.0.1:$port/checkout"
  curl -s -o /dev/null --cacert "$tmp/ca.pem" -X POST "$url" -H 'Content-Type: application/json' \
    --data-binary '{"address":{},"items":[],"payment":{}}' || true
  wrk -t"$threads" -c"$conns" -d"${warm}s" "${hdr[@]}" -s "$here/checkout.lua" "$url" >/dev/null 2>&1 || true
  c0=$(cpu_ticks "$srv_pid")
  wrk -t"$threads" -c"$conns" -d"${dur}s" --timeout 10s "${hdr[@]}" -s "$here/checkout.lua" "$url" \
    >"$tmp/wrk.out" 2>&1 || true
  c1=$(cpu_ticks "$srv_pid")
  kill -TERM "$srv_pid"
  wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
  line=$(grep '^@@bench ' "$tmp/wrk.out" | head -n 1 || true)
  val() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  n=$(val requests)
  [ -n "$n" ] || { echo "| $mode | (wrk printed no result) | | | | |"; continue; }
  errs=$(($(val non2xx) + $(val err_connect) + $(val err_read) + $(val err_write) + $(val err_timeout)))
  awk -v m="$mode" -v n="$n" -v rps="$(val rps)" -v p50="$(val p50_us)" -v p99="$(val p99_us)" \
    -v d=$((c1 - c0)) -v hz="$hz" -v e="$errs" 'BEGIN {
      printf "| %s | %.0f | %.2f | %.2f | %.1f | %d |\n", m, rps, p50 / 1000, p99 / 1000, d * 1e6 / hz / n, e }'
done
