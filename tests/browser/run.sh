#!/bin/sh
# The browser test of /status (tests/browser/status.test.mjs): Debian's chromium driven by
# playwright-core (npm, pinned in package-lock.json; no browser download) against a live checkoutd.
# Skipped, with a line saying so, when chromium or node is not installed (scripts/deps.sh test
# installs both). Takes about 10 s. Usage: tests/browser/run.sh BUILD_DIR
set -eu
b=${1:-build/release}
here=$(dirname "$0")
browser=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$browser" ] || ! command -v node >/dev/null 2>&1; then
  echo "== browser test: SKIPPED ($browser or node is not installed; scripts/deps.sh test installs them)"
  exit 0
fi
if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
  echo "== browser test: npm ci (playwright-core, once)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "== browser test: $browser on /status"
CHECKOUTD_BIN="$PWD/$b/checkoutd" FAKE_UPSTREAMS_BIN="$PWD/$b/fake-upstreams" CHROMIUM="$browser" \
  node "$here/status.test.mjs"
