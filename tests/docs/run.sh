#!/bin/sh
# The checks of the documentation (docs/development.md, "The documentation's checks"):
#   1. tests/docs/check_links.py   relative links and #anchors of README.md and docs/*.md (python3)
#   2. redocly lint                docs/openapi.yaml (@redocly/cli, rules in tests/docs/redocly.yaml)
#   3. configs.test.mjs            docs/config.schema.json and `checkoutd --check-config` agree on
#                                  every config of config/, tests/configs/ and the docs' examples
#   4. live.test.mjs               every answer a live checkoutd gives, validated against openapi.yaml
# 2-4 need node: the npm packages are pinned in package-lock.json and installed here by `npm ci`
# (once); they are skipped, with a line saying so, when node is not installed (scripts/deps.sh
# test installs it). They run with the programs of BUILD_DIR, so `make test-asan` and `make
# test-tsan` run the C side of 3 and 4 under the sanitizers. About 10 s in all.
# Usage: tests/docs/run.sh BUILD_DIR   (from the repository root)
set -u
b=${1:-build/release}
here=$(dirname "$0")
failed=0
echo "== docs: links"
python3 "$here/check_links.py" || failed=1
if ! command -v node >/dev/null 2>&1; then
  echo "== docs: openapi lint, config agreement, live answers SKIPPED (node is not installed; scripts/deps.sh test installs it)"
  exit $failed
fi
if [ ! -f "$here/node_modules/@redocly/cli/package.json" ] || [ ! -f "$here/node_modules/ajv/package.json" ]; then
  echo "== docs: npm ci (@redocly/cli, ajv, yaml, once)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || exit 1
fi
# no telemetry and no update check: the tests talk to loopback only
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
# @redocly/cli 2.x wants node >= 20.19 (Debian 12's own nodejs is 18.20; this machine's is 20):
# with an older node the lint is skipped, loudly; the Ajv checks below run on node 18 too.
if node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "== docs: redocly lint docs/openapi.yaml"
  # redocly 2.x prints a boxed notice about Node 20's end of life: not an error, left out
  out=$(mktemp)
  "$here/node_modules/.bin/redocly" lint --config "$here/redocly.yaml" --format=stylish docs/openapi.yaml \
    >"$out" 2>&1 || failed=1
  grep -v -e '^ *[╔║╚]' -e '^$' "$out"
  rm -f "$out"
else
  echo "== docs: redocly lint SKIPPED (node $(node --version) is older than 20.19, which @redocly/cli 2.x needs)"
fi
echo "== docs: config schema vs checkoutd --check-config"
CHECKOUTD_BIN="$PWD/$b/checkoutd" node "$here/configs.test.mjs" || failed=1
echo "== docs: live answers vs docs/openapi.yaml"
CHECKOUTD_BIN="$PWD/$b/checkoutd" FAKE_UPSTREAMS_BIN="$PWD/$b/fake-upstreams" \
  node "$here/live.test.mjs" || failed=1
[ $failed -eq 0 ] && echo "docs checks: passed" || echo "docs checks: FAILED"
exit $failed
