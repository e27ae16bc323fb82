#!/usr/bin/env bash
# bench/profile.sh — a profile of checkoutd under a fixed load of the "fast" scenario of
# bench/bench.sh (every validation -> nginx stub that answers 200 at once), for bench/RESULTS.md.
#
# Usage: bench/profile.sh [callgrind|perf|strace] [BUILD_DIR]   (default: callgrind, build/release)
#   callgrind  checkoutd runs under valgrind --tool=callgrind; instructions are counted only
#              during PROFILE_N checkouts (after PROFILE_WARMUP), so "instructions per checkout"
#              is exact and does not depend on what else runs on the shared cores.
#   perf       perf record -e cpu-clock -g on the running checkoutd during PROFILE_N checkouts:
#              where the time goes, kernel included (hardware counters are not available in this VM).
#   strace     strace -c -f: system calls per checkout (strace slows checkoutd down a lot; counts only).
# Environment: PROFILE_STUB=slow profiles against the 50 ms stub instead (with PROFILE_C=256: the
#              slow scenario's in-flight count), PROFILE_N (2000 for callgrind and strace, 20000 for perf), PROFILE_C concurrency
#              (16 for callgrind, 64 otherwise),
#              PROFILE_WARMUP checkouts before counting (200), BENCH_OUT (bench/out),
#              PROFILE_HOST the upstreams' host in the URLs (127.0.0.1; "localhost" profiles the
#              v1.3 names path: resolved by checkoutd's resolver thread from the hosts file).
# The load comes from bench/curl-load.sh (curl --parallel), so the count of checkouts is exact.
# Writes bench/out/profile-TOOL-STAMP.txt (summary tables) next to the raw profile data.
set -eu
set -o pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers} # PEERS_DIR: another checkout of shared/peers (a worktree)
tool=${1:-callgrind}
build=${2:-build/release}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
checkoutd="$build/checkoutd"
outdir=${BENCH_OUT:-$root/bench/out}
warm=${PROFILE_WARMUP:-200}
case "$tool" in
  callgrind) n=${PROFILE_N:-2000} c=${PROFILE_C:-16} ;;
  perf) n=${PROFILE_N:-20000} c=${PROFILE_C:-64} ;;
  strace) n=${PROFILE_N:-2000} c=${PROFILE_C:-64} ;;
  *) echo "profile.sh: tool must be callgrind, perf or strace" >&2; exit 2 ;;
esac

die() {
  echo "profile.sh: $*" >&2
  exit 1
}
[ -x "$checkoutd" ] || die "no $checkoutd (run make first)"
case "$tool" in callgrind) need=valgrind ;; *) need=$tool ;; esac
command -v "$need" >/dev/null 2>&1 || die "$need is not installed"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/checkoutd-profile.XXXXXX")
chmod 755 "$tmp" # nginx's workers (nobody) must reach their prefix
srv_pid=""
perf_pid=""
stubs_up=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$perf_pid" ] || kill -INT "$perf_pid" 2>/dev/null || true
  [ -z "$perf_pid" ] || wait "$perf_pid" 2>/dev/null || true
  if [ -n "$srv_pid" ]; then
    kill -TERM "$srv_pid" 2>/dev/null || true
    wait "$srv_pid" 2>/dev/null || true
  fi
  [ "$stubs_up" = 0 ] || bash "$peers/upstreams/stop.sh" "$tmp/stubs" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The stubs on a free base port (as bench.sh: retry when another program took one meanwhile).
port_taken() {
  awk -v h="$(printf ':%04X' "$1")" 'FNR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
for _ in $(seq 20); do
  base=$((20000 + (RANDOM % 2000) * 5))
  port_taken "$base" && continue
  port_taken $((base + 4)) && continue
  port_taken $((base + 5)) && continue
  if bash "$peers/upstreams/start.sh" "$base" "$tmp/stubs" >"$tmp/stubs.out" 2>&1; then
    stubs_up=1
    break
  fi
done
[ "$stubs_up" = 1 ] || die "could not start the nginx stubs: $(cat "$tmp/stubs.out")"

stub=$base
[ "${PROFILE_STUB:-fast}" = slow ] && stub=$((base + 1))
host=${PROFILE_HOST:-127.0.0.1}
cat >"$tmp/fast.json" <<JSON
{
  "listen": "127.0.0.1:0", "deadline_ms": 10000, "max_inflight": 100000,
  "validations": [
    {"name": "address",   "field": "address", "url": "http://$host:$stub/validate", "timeout_ms": 10000},
    {"name": "inventory", "field": "items",   "url": "http://$host:$stub/check",    "timeout_ms": 10000},
    {"name": "payment",   "field": "payment", "url": "http://$host:$stub/verify",   "timeout_ms": 10000}
  ]
}
JSON

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$outdir"
report="$outdir/profile-$tool-$stamp.txt"
if [ "$tool" = callgrind ]; then
  data="$outdir/callgrind-$stamp.out"
  # Counting starts switched off: start-up and warm-up are not in the profile.
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$data" \
    "$checkoutd" --config "$tmp/fast.json" >"$tmp/srv.out" 2>"$tmp/srv.err" &
else
  data="$outdir/$tool-$stamp.data"
  "$checkoutd" --config "$tmp/fast.json" >"$tmp/srv.out" 2>"$tmp/srv.err" &
fi
srv_pid=$!
for _ in $(seq 300); do
  grep -q 'listening on' "$tmp/srv.out" 2>/dev/null && break
  kill -0 "$srv_pid" 2>/dev/null || die "checkoutd did not start: $(tail -n 3 "$tmp/srv.err")"
  sleep 0.1
done
port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\).*/\1/p' "$tmp/srv.out" | head -n 1)
[ -n "$port" ] || die "checkoutd printed no port"
url="http://127.0.0.1:$port/checkout"

"$here/curl-load.sh" -n "$warm" -c "$c" --mix accepted=100 "$url" >/dev/null
case "$tool" in
  callgrind) callgrind_control -i on "$srv_pid" >/dev/null 2>&1 ;;
  perf)
    perf record -e cpu-clock -F 1999 -g -p "$srv_pid" -o "$data" >"$tmp/perf.log" 2>&1 &
    perf_pid=$!
    sleep 0.5 # perf attaches asynchronously
    ;;
  strace)
    strace -c -f -p "$srv_pid" -o "$data" 2>"$tmp/strace.log" &
    perf_pid=$!
    sleep 0.5
    ;;
esac
"$here/curl-load.sh" -n "$n" -c "$c" --mix accepted=100 "$url" | tee "$tmp/load.txt" >&2
if [ "$tool" = callgrind ]; then
  callgrind_control -i off "$srv_pid" >/dev/null 2>&1
else
  kill -INT "$perf_pid"
  wait "$perf_pid" || true
  perf_pid=""
fi
kill -TERM "$srv_pid"
wait "$srv_pid" 2>/dev/null || true
srv_pid=""

# The report reads only the first lines of long listings (head): no pipefail from here on, or
# the reader's SIGPIPE would count as a failure.
set +o pipefail
{
  echo "# checkoutd profile ($tool), ${PROFILE_STUB:-fast} stub at $host: $n checkouts at concurrency $c after $warm of warm-up"
  echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $("$checkoutd" --version), $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')"
  sed 's/^/# load: /' "$tmp/load.txt"
  echo
  if [ "$tool" = callgrind ]; then
    total=$(callgrind_annotate "$data" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t { gsub(",", "", $1); t = $1 } END { print t }')
    echo "instructions (Ir) counted: $total = $(awk -v t="$total" -v n="$n" 'BEGIN { printf "%.0f", t / n }') per checkout"
    echo
    echo "## by library (self instructions)"
    # callgrind_annotate prints "Ir (pct) file:function [object]"; the object is the library.
    callgrind_annotate --threshold=100 "$data" 2>/dev/null |
      awk -v t="$total" '/\[.*\]$/ && $1 ~ /^[0-9,]+$/ {
          ir = $1; gsub(",", "", ir); obj = $NF; gsub(/[\[\]]/, "", obj); sub(/.*\//, "", obj)
          by[obj] += ir
        }
        END { for (o in by) printf "%6.1f%%  %14.0f  %s\n", by[o] * 100 / t, by[o], o }' | sort -rn
    echo
    echo "## top functions, self"
    callgrind_annotate --threshold=100 "$data" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -n 40
    echo
    echo "## top functions, inclusive (with what they call)"
    callgrind_annotate --inclusive=yes --threshold=100 "$data" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -n 50
  elif [ "$tool" = perf ]; then
    echo "## by library (self samples, kernel = [kernel.kallsyms])"
    perf report -i "$data" --no-children --sort dso -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' || true
    echo
    echo "## by thread (the unnamed 'checkoutd' thread that is not the main one is the task-group loop)"
    perf report -i "$data" --no-children --sort pid -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' || true
    echo
    echo "## top functions, self"
    perf report -i "$data" --no-children --sort dso,sym -g none --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -n 40
    echo
    echo "## kernel, inclusive: time under each system call, the scheduler and softirq (loopback receive)"
    perf report -i "$data" --children --sort sym -g none --stdio 2>/dev/null |
      grep -E '\] (entry_SYSCALL_64_after_hwframe|__x64_sys_[a-z_0-9]+|schedule|do_softirq[a-z.0-9_]*|nf_hook_slow)$' |
      head -n 20
  else
    echo "## system calls per checkout (strace -c -f over the $n checkouts; strace slows the run)"
    awk -v n="$n" '
      /^-/ || /^%/ || /total/ || NF < 5 { next }
      { name = $NF; calls = ($4 ~ /^[0-9]+$/) ? $4 : 0; if (calls) printf "%8.2f  %-16s (%d calls, %s%% of syscall time)\n", calls / n, name, calls, $1 }
    ' "$data" | sort -rn
    awk -v n="$n" '/total$/ { printf "%8.2f  total\n", $4 / n }' "$data"
  fi
} >"$report"
echo "profile.sh: wrote $report (raw data: $data)" >&2
