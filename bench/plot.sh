#!/usr/bin/env bash
# bench/plot.sh — the picture of a bench run (what `make bench` writes as bench/out/latency.png):
# per scenario, the latency percentiles p50, p90, p99 and p99.9 of checkoutd and of the reference
# (log scale) side by side, and below each its throughput bars. Medians over the rounds, from the
# raw rows that bench/bench.sh wrote.
# Usage: bench/plot.sh RAW.tsv OUT.png   (needs gnuplot: sh scripts/deps.sh bench)
set -eu
set -o pipefail
raw=$1
out=$2
command -v gnuplot >/dev/null 2>&1 || { echo "plot.sh: gnuplot is missing" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/checkoutd-plot.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Medians per scenario and server: lat_<s>.dat (percentile, checkoutd ms, peer ms) and thr_<s>.dat.
# A server that did not run (BENCH_SERVERS) or failed gets NaN, which gnuplot leaves out.
awk -F '\t' -v dir="$tmp" '
  function median(key,    n, a, i, j, x) {
    n = cnt[key]
    if (n == 0) return "NaN"
    for (i = 1; i <= n; i++) a[i] = val[key, i]
    for (i = 2; i <= n; i++) { x = a[i]; j = i - 1; while (j > 0 && a[j] > x) { a[j + 1] = a[j]; j-- } a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function add(key, v) { if (v != "" && v != "nan") { cnt[key]++; val[key, cnt[key]] = v } }
  NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
  $4 == "FAILED" { next }
  {
    s = $2; srv = $3
    if (!(s in seen)) { seen[s] = 1; order[++ns] = s }
    rounds[$1] = 1
    add(s SUBSEP srv SUBSEP "rps", $col["rps"])
    add(s SUBSEP srv SUBSEP "p50", $col["p50_us"] / 1000)
    add(s SUBSEP srv SUBSEP "p90", $col["p90_us"] / 1000)
    add(s SUBSEP srv SUBSEP "p99", $col["p99_us"] / 1000)
    if ("p999_us" in col && $col["p999_us"] != "") add(s SUBSEP srv SUBSEP "p999", $col["p999_us"] / 1000)
  }
  END {
    for (k = 1; k <= ns; k++) {
      s = order[k]
      f = dir "/lat_" s ".dat"
      split("p50 p90 p99 p999", ps, " ")
      split("p50 p90 p99 p99.9", names, " ")
      for (i = 1; i <= 4; i++)
        printf "%s %s %s\n", names[i], median(s SUBSEP "checkoutd" SUBSEP ps[i]), median(s SUBSEP "peer" SUBSEP ps[i]) > f
      printf "checkouts/s %s %s\n", median(s SUBSEP "checkoutd" SUBSEP "rps"), median(s SUBSEP "peer" SUBSEP "rps") > (dir "/thr_" s ".dat")
      list = list (list == "" ? "" : " ") s
    }
    nr = 0
    for (r in rounds) nr++
    print list > (dir "/scenarios")
    print nr > (dir "/rounds")
  }' "$raw"

scenarios=$(cat "$tmp/scenarios")
# A scenario the peer did not run (the *_off rows: it has no journal) has no reference series:
# gnuplot refuses a histogram column without one valid point.
has_peer() { awk '$3 != "NaN" { found = 1 } END { exit !found }' "$tmp/thr_$1.dat"; }
[ -n "$scenarios" ] || { echo "plot.sh: no successful run in $raw" >&2; exit 1; }
n=$(echo "$scenarios" | wc -w)
rounds=$(cat "$tmp/rounds")
when=$(basename "$raw" .tsv | sed 's/^bench-//')

{
  echo "set terminal pngcairo noenhanced size $((420 * n + 80)),760 font 'sans,10'"
  echo "set output '$out'"
  echo "set multiplot layout 2,$n title \"checkoutd (C) and the reference peer (Python): medians over $rounds round(s), run $when\" font 'sans,12'"
  echo "set style data histograms"
  echo "set style histogram clustered gap 1"
  echo "set style fill solid 0.85 border -1"
  echo "set boxwidth 0.9"
  echo "set grid ytics lc rgb '#dddddd'"
  echo "set key below horizontal"
  echo "set logscale y"
  echo "set ylabel 'latency, ms (log scale)'"
  for s in $scenarios; do
    echo "set title '$s: latency percentiles'"
    if has_peer "$s"; then
      echo "plot '$tmp/lat_$s.dat' using 2:xtic(1) title 'checkoutd' lc rgb '#1a7f37', '' using 3 title 'reference' lc rgb '#0969da', \\"
      echo "  '' using (\$0-0.22):2:(sprintf('%.1f',\$2)) with labels offset 0,0.7 font 'sans,8' notitle, \\"
      echo "  '' using (\$0+0.22):3:(sprintf('%.1f',\$3)) with labels offset 0,0.7 font 'sans,8' notitle"
    else
      echo "plot '$tmp/lat_$s.dat' using 2:xtic(1) title 'checkoutd' lc rgb '#1a7f37', \\"
      echo "  '' using (\$0):2:(sprintf('%.1f',\$2)) with labels offset 0,0.7 font 'sans,8' notitle"
    fi
  done
  echo "unset logscale y"
  echo "set yrange [0:*]"
  echo "set offsets 0, 0, graph 0.12, 0" # room for the labels above the bars
  echo "set ylabel 'checkouts per second'"
  for s in $scenarios; do
    echo "set title '$s: throughput'"
    if has_peer "$s"; then
      echo "plot '$tmp/thr_$s.dat' using 2:xtic(1) title 'checkoutd' lc rgb '#1a7f37', '' using 3 title 'reference' lc rgb '#0969da', \\"
      echo "  '' using (\$0-0.22):2:(sprintf('%.0f',\$2)) with labels offset 0,0.7 font 'sans,9' notitle, \\"
      echo "  '' using (\$0+0.22):3:(sprintf('%.0f',\$3)) with labels offset 0,0.7 font 'sans,9' notitle"
    else
      echo "plot '$tmp/thr_$s.dat' using 2:xtic(1) title 'checkoutd' lc rgb '#1a7f37', \\"
      echo "  '' using (\$0):2:(sprintf('%.0f',\$2)) with labels offset 0,0.7 font 'sans,9' notitle"
    fi
  done
  echo "unset multiplot"
} >"$tmp/plot.gp"
gnuplot "$tmp/plot.gp"
echo "plot.sh: wrote $out" >&2
