#!/bin/sh
# Installs the Debian packages that building, running and testing checkoutd need.
# Run as root it installs what is missing (apt-get); otherwise it prints the line to run.
# Usage: scripts/deps.sh [build|test|bench]   (each set includes the ones before it)
#        scripts/deps.sh fuzz   (build + clang and libclang-rt-14-dev, which holds libFuzzer)
set -eu
set_name=${1:-build}
pkgs="gcc make pkg-config libmicrohttpd-dev libgnutls28-dev libcurl4-openssl-dev libjansson-dev libssl-dev libhiredis-dev libc-ares-dev libsqlite3-dev curl ca-certificates"
case "$set_name" in
  build) ;;
  # chromium + node run the browser test of /status (tests/browser); Debian's npm only when no npm
  # is there (a nodejs from nodesource bundles its own, and conflicts with Debian's npm)
  # python3: the docs' link check (tests/docs/check_links.py); node also runs tests/docs (npm ci);
  # strace: test_journal's proof of the order of fdatasync and sends
  test)  pkgs="$pkgs libcmocka-dev openssl redis-server chromium nodejs python3 strace"
         command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm" ;;
  bench) pkgs="$pkgs libcmocka-dev openssl redis-server wrk nginx libnginx-mod-http-echo python3-aiohttp python3-redis procps gnuplot-nox" ;;
  lint)  pkgs="$pkgs clang-format clang-tidy cppcheck" ;;
  fuzz)  pkgs="$pkgs clang libclang-rt-14-dev" ;;
  *) echo "deps.sh: unknown set '$set_name' (build, test, bench, lint, fuzz)" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing Debian packages:$missing" >&2
  echo "deps.sh: run as root:  apt-get update && apt-get install -y$missing" >&2
  exit 1
fi
echo "deps.sh: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
