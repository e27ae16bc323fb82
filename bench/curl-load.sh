#!/usr/bin/env bash
# bench/curl-load.sh — a checkout load test that needs nothing but curl (and bash, awk, sort).
# See usage() below, or run it with --help.
set -eu
set -o pipefail

usage() {
  cat <<'HELP'
Usage: bench/curl-load.sh [-n N] [-c C] [-p P] [--mix KIND=PCT,...] [--timeout S] [--keep] URL

Sends N checkouts (POST, Content-Type: application/json) to URL, at most C at a time, with
`curl --parallel --parallel-max C` from one generated curl config file (-K): no process per
request. Each transfer reports `%{http_code} %{time_total}` (-w); the script prints the total
time, checkouts/s, the answers by status and by kind of body, latency p50/p90/p99/max, and the
CPU that curl itself used.

  -n N            checkouts to send (default 1000)
  -c C            concurrent transfers = connections, kept alive (default 50; at most 300 per
                  curl process: larger C is split over ceil(C/300) curl processes)
  -p P            curl processes (default 1, or more when C > 300): N and C are split between them.
                  Use -p 2 when curl is the limit (see below) and there is a spare core.
  --mix SPEC      the bodies, by weight (default accepted=70,rejected=20,failing=10). Kinds, with
                  what checkoutd + its fake upstreams (make run) answer:
                    accepted  token tok_visa, sku SKU-1                 -> 200 accepted
                    rejected  an item with sku OOS-1 (out of stock)     -> 422 rejected
                    declined  token tok_declined (payment 402)          -> 422 rejected
                    failing   token tok_error (payment 500)             -> 502 failed
                    slow      token tok_slow (payment 5 s > timeout)    -> 504 failed, 1.5 s
                    invalid   no payment field                          -> 400 invalid_request
                  The kinds are spread evenly through the run, not in blocks.
  --timeout S     per-transfer limit in seconds (curl --max-time, default 30)
  --keep          keep the generated curl config and the per-transfer results (prints where)
  -h, --help      this text

Example, against `make run` (http://127.0.0.1:8080, fake upstreams on 9101-9103):
  bench/curl-load.sh -n 2000 -c 50 http://127.0.0.1:8080/checkout
  bench/curl-load.sh -n 5000 -c 100 --mix accepted=100 http://127.0.0.1:8080/checkout

Where curl itself is the limit (measured on the 2-core bench machine, see bench/RESULTS.md): one
curl process in --parallel mode does about 12,000-16,000 transfers/s against a server that answers
at once (nginx), using a whole core: about 70-90 us of curl CPU per transfer. Against checkoutd on
the same 2 cores it needs about a quarter of a core at 3,000 checkouts/s, and would need two thirds
of one at 8,000/s: from there on, it takes a core that the server would use. The last line says how much CPU curl used; at 90 % or more
of its core(s) the result measures curl, not the server: add -p 2 (if a core is free), or use wrk
(make bench). curl caps --parallel-max at 300 connections per process, hence -p for more.
Generating the config costs about 0.5 s per 100,000 checkouts, before the clock starts.
HELP
}

die() {
  echo "curl-load.sh: $*" >&2
  exit 2
}

n=1000
c=50
procs=""
mix="accepted=70,rejected=20,failing=10"
timeout=30
keep=0
url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -n) [ $# -ge 2 ] || die "-n needs a number"; n=$2; shift 2 ;;
    -c) [ $# -ge 2 ] || die "-c needs a number"; c=$2; shift 2 ;;
    -p) [ $# -ge 2 ] || die "-p needs a number"; procs=$2; shift 2 ;;
    --mix) [ $# -ge 2 ] || die "--mix needs KIND=PCT,..."; mix=$2; shift 2 ;;
    --mix=*) mix=${1#--mix=}; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$url" ] || die "one URL only (see --help)"; url=$1; shift ;;
  esac
done
[ -n "$url" ] || { usage >&2; exit 2; }
case "$n" in '' | *[!0-9]*) die "-n must be a positive integer" ;; esac
case "$c" in '' | *[!0-9]*) die "-c must be a positive integer" ;; esac
case "$timeout" in '' | *[!0-9.]*) die "--timeout must be a number of seconds" ;; esac
[ "$n" -ge 1 ] || die "-n must be at least 1"
[ "$c" -ge 1 ] || die "-c must be at least 1"
case "$url" in http://* | https://*) ;; *) die "URL must start with http:// or https://" ;; esac
# The kind of each transfer rides in the URL's fragment: curl never sends it, and %{url} gives
# it back, so answers can be matched to bodies whatever the server does with headers.
url=${url%%#*}
case "$url" in *'"'* | *\\* | *' '*) die "URL must not contain quotes, backslashes or spaces" ;; esac
if [ -z "$procs" ]; then
  procs=$(((c + 299) / 300))
fi
case "$procs" in '' | *[!0-9]*) die "-p must be a positive integer" ;; esac
[ "$procs" -ge 1 ] || die "-p must be at least 1"
[ "$procs" -le "$c" ] || die "-p ($procs) cannot exceed -c ($c): each process needs a connection"
[ $(((c + procs - 1) / procs)) -le 300 ] || die "curl allows --parallel-max 300: use -p $(((c + 299) / 300)) or more for -c $c"
[ "$procs" -le "$n" ] || procs=$n
command -v curl >/dev/null 2>&1 || die "curl is missing"
curl --help all 2>/dev/null | grep -q -- '--parallel-max' || die "this curl has no --parallel-max (7.66 or later is needed)"

# Validate the mix into "kind weight" lines; unknown kinds are refused, not ignored.
mixlines=$(printf '%s\n' "$mix" | tr ',' '\n' | awk -F '=' '
  NF != 2 || $2 !~ /^[0-9]+(\.[0-9]+)?$/ { print "bad " $0; next }
  $1 !~ /^(accepted|rejected|declined|failing|slow|invalid)$/ { print "bad " $0; next }
  { w[$1] += $2; if (!seen[$1]++) order[++k] = $1 }
  END { for (i = 1; i <= k; i++) print order[i], w[order[i]] }')
if printf '%s\n' "$mixlines" | grep -q '^bad '; then
  die "bad --mix item '$(printf '%s\n' "$mixlines" | sed -n 's/^bad //p' | head -n 1)' (KIND=PCT, kinds: accepted rejected declined failing slow invalid)"
fi
total_w=$(printf '%s\n' "$mixlines" | awk '{ s += $2 } END { print s + 0 }')
awk -v t="$total_w" 'BEGIN { exit !(t > 0) }' || die "--mix weights add up to 0"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/curl-load.XXXXXX")
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Only the curl processes this script started, by PID.
  for pid in ${curl_pids:-}; do kill "$pid" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then echo "curl-load.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
  exit "$rc"
}
curl_pids=""
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the curl config files: one block per checkout, `next` between blocks ----------------------
# Options after `next` start from scratch, so each block repeats the header, output and -w.
# The kinds are spread evenly (each step takes the kind furthest behind its share), and transfer
# i goes to process i mod P.
printf '%s\n' "$mixlines" | awk -v n="$n" -v procs="$procs" -v url="$url" -v dir="$tmp" \
  -v tmo="$timeout" '
  function body(kind, i,   oid, sku, tok, pay) {
    oid = sprintf("ord-load-%06d", i)
    sku = (kind == "rejected") ? "OOS-1" : "SKU-1"
    tok = "tok_visa"
    if (kind == "declined") tok = "tok_declined"
    if (kind == "failing") tok = "tok_error"
    if (kind == "slow") tok = "tok_slow"
    pay = ",\\\"payment\\\":{\\\"method\\\":\\\"card\\\",\\\"token\\\":\\\"" tok "\\\",\\\"amount\\\":2598,\\\"currency\\\":\\\"USD\\\"}"
    if (kind == "invalid") pay = ""
    return "{\\\"order_id\\\":\\\"" oid "\\\",\\\"address\\\":{\\\"name\\\":\\\"Ada Lovelace\\\",\\\"line1\\\":\\\"1 Main St\\\",\\\"city\\\":\\\"Springfield\\\",\\\"postal_code\\\":\\\"12345\\\",\\\"country\\\":\\\"US\\\"},\\\"items\\\":[{\\\"sku\\\":\\\"" sku "\\\",\\\"quantity\\\":2}]" pay "}"
  }
  { kind[++k] = $1; w[k] = $2; tw += $2 }
  END {
    for (i = 1; i <= n; i++) {
      best = 1; bestd = -1e18
      for (j = 1; j <= k; j++) { d = w[j] / tw * i - got[j]; if (d > bestd) { bestd = d; best = j } }
      got[best]++
      f = dir "/load-" (i % procs) ".curl"
      if (cnt[f]++) print "next" > f
      printf "url = \"%s#%s\"\nshow-error\nheader = \"Content-Type: application/json\"\ndata-binary = \"%s\"\noutput = \"/dev/null\"\nmax-time = %s\nwrite-out = \"%%{http_code} %%{time_total} %%{exitcode} %%{url}\\n\"\n", url, kind[best], body(kind[best], i), tmo > f
    }
  }'

# ---- the run ----------------------------------------------------------------------------------
# --parallel-immediate: open the C connections at once instead of waiting to learn whether the
# first one can multiplex (HTTP/1.1 never does). -s without progress meter, -S still prints errors.
run_all() {
  local i cc
  for i in $(seq 0 $((procs - 1))); do
    # Process i gets its share of the concurrency (the first ones one more when C % P != 0).
    cc=$((c / procs + (i < c % procs ? 1 : 0)))
    curl -sS --no-progress-meter --parallel --parallel-immediate --parallel-max "$cc" \
      -K "$tmp/load-$i.curl" >"$tmp/out-$i.txt" 2>"$tmp/err-$i.txt" &
    curl_pids="$curl_pids $!"
  done
  local rc=0
  for pid in $curl_pids; do wait "$pid" || rc=$?; done
  curl_pids=""
  return "$rc"
}

echo "curl-load: $n checkouts, concurrency $c ($procs curl process(es)), mix $(printf '%s\n' "$mixlines" | awk '{ printf "%s%s=%s", (NR > 1 ? "," : ""), $1, $2 }') -> $url"
TIMEFORMAT='%R %U %S'
curl_rc=0
{ time run_all; } 2>"$tmp/time" || curl_rc=$?
read -r wall cpu_user cpu_sys <"$tmp/time"
cat "$tmp"/out-*.txt >"$tmp/results.txt"
[ "$curl_rc" = 0 ] || echo "curl-load.sh: curl exited with status $curl_rc (transfers that failed are listed as 000 below)" >&2
errs=$(cat "$tmp"/err-*.txt | sort | uniq -c | sort -rn | head -n 5)
[ -z "$errs" ] || printf 'curl errors (most frequent):\n%s\n' "$errs" >&2

# ---- the report -------------------------------------------------------------------------------
sort -t ' ' -k 2,2g "$tmp/results.txt" | awk -v n="$n" -v wall="$wall" -v cu="$cpu_user" \
  -v cs="$cpu_sys" -v procs="$procs" '
  {
    code = $1; t = $2 * 1000; kind = $4; sub(/.*#/, "", kind)
    lat[++m] = t
    st[code]++
    bk[kind, code]++; kinds[kind]++
    if (!(code in seen)) { seen[code] = 1; codes[++nc] = code }
  }
  function pct(p,   r) { r = int(p / 100 * m); if (r < p / 100 * m) r++; if (r < 1) r = 1; return lat[r] }
  function want(kind) {
    if (kind == "accepted") return "200"
    if (kind == "rejected" || kind == "declined") return "422"
    if (kind == "failing") return "502"
    if (kind == "slow") return "504"
    if (kind == "invalid") return "400"
    return "?"
  }
  END {
    for (i = 2; i <= nc; i++) { x = codes[i]; j = i - 1; while (j > 0 && codes[j] > x) { codes[j + 1] = codes[j]; j-- } codes[j + 1] = x }
    printf "total time      %.3f s\n", wall
    printf "checkouts/s     %.1f\n", (wall > 0 ? m / wall : 0)
    printf "answers         "
    for (i = 1; i <= nc; i++) printf "%s%s: %d (%.1f%%)", (i > 1 ? "   " : ""), (codes[i] == "000" ? "000 (no answer)" : codes[i]), st[codes[i]], 100 * st[codes[i]] / m
    printf "\n"
    if (m != n) printf "                %d of %d transfers reported a result\n", m, n
    bad = 0
    printf "by kind         "
    first = 1
    for (kd in kinds) {
      line = ""
      for (i = 1; i <= nc; i++) if ((kd, codes[i]) in bk) {
        line = line sprintf("%s%s", (line == "" ? "" : " "), codes[i] "×" bk[kd, codes[i]])
        if (codes[i] != want(kd)) bad += bk[kd, codes[i]]
      }
      printf "%s%s -> %s", (first ? "" : "   "), kd, line
      first = 0
    }
    printf "\n"
    if (bad) printf "unexpected      %d answers differ from what checkoutd + its fake upstreams answer for their kind (see --help)\n", bad
    else printf "unexpected      none (every kind got the status checkoutd + its fake upstreams give it)\n"
    if (m) printf "latency ms      p50 %.2f   p90 %.2f   p99 %.2f   max %.2f\n", pct(50), pct(90), pct(99), lat[m]
    core = (wall > 0 ? (cu + cs) / wall * 100 : 0)
    printf "curl CPU        %.2f s user + %.2f s sys = %.0f%% of one core (%d process(es))\n", cu, cs, core, procs
    if (core >= 90 * procs) printf "                curl used all its core(s): this rate is curl'"'"'s limit, not the server'"'"'s (use -p 2 or wrk)\n"
  }'
