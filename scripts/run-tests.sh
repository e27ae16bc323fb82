#!/bin/sh
# Runs each test binary with the paths of the built programs; non-zero exit if any fails.
# Usage: scripts/run-tests.sh BUILD_DIR TEST_BINARY...
set -u
b=$1; shift
export CHECKOUTD_BIN="$PWD/$b/checkoutd"
export CHECKOUTD_FAULTS_BIN="$PWD/$b/checkoutd-faults"
# v1.3: a daemon started without its own journal path (proc_start_checkoutd gives each one its
# own) and --check-config runs never touch /var/lib
export CHECKOUTD_JOURNAL_PATH="${CHECKOUTD_JOURNAL_PATH:-/tmp/checkoutd-tests-$$/journal.db}"
export FAKE_UPSTREAMS_BIN="$PWD/$b/fake-upstreams"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:exitcode=66}"
failed=0; passed=0
for t in "$@"; do
  echo "== $t"
  if "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
echo "test binaries: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
