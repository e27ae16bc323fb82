#!/bin/sh
# make run: starts the fake upstreams and checkoutd on the default config (config/checkoutd.json),
# prints curl commands for an accepted and a rejected checkout, and stops both on Ctrl-C.
# "trace" is on here (CHECKOUTD_TRACE=true, a demo): X-Checkout-Trace: 1 shows a checkout's timings.
# Usage: scripts/run.sh BUILD_DIR   (environment: CHECKOUTD_LISTEN etc. override the config;
# RUN_CONFIG=config/compensate.json runs the compensation example of docs/compensation.md instead)
set -u
b=${1:-build/release}
up_pid=""; co_pid=""
cleanup() {
  [ -n "$co_pid" ] && kill "$co_pid" 2>/dev/null && wait "$co_pid" 2>/dev/null
  [ -n "$up_pid" ] && kill "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
  exit 0
}
trap cleanup INT TERM

"$b/fake-upstreams" --address-port 9101 --inventory-port 9102 --payment-port 9103 &
up_pid=$!
CHECKOUTD_TRACE=${CHECKOUTD_TRACE:-true} "$b/checkoutd" --config "${RUN_CONFIG:-config/checkoutd.json}" &
co_pid=$!
sleep 1
if ! kill -0 "$up_pid" 2>/dev/null || ! kill -0 "$co_pid" 2>/dev/null; then
  echo "run.sh: a server did not start (ports 8080 and 9101-9103 must be free)" >&2
  cleanup
fi
addr=$(printf '%s' "${CHECKOUTD_LISTEN:-127.0.0.1:8080}")
cat <<MSG

checkoutd is listening on http://$addr  (fake upstreams on 9101-9103). Try:

  # 200 accepted
  curl -s -X POST http://$addr/checkout -H 'Content-Type: application/json' -d '{"order_id":"ord-1001","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":2}],"payment":{"method":"card","token":"tok_visa","amount":2598,"currency":"USD"}}'

  # 422 rejected: inventory out of stock, the slow payment (5 s) cancelled at once
  curl -s -X POST http://$addr/checkout -H 'Content-Type: application/json' -d '{"order_id":"ord-1002","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"OOS-9","quantity":1}],"payment":{"method":"card","token":"tok_slow","amount":2598,"currency":"USD"}}'

  # the same checkout with a trace: per validation and attempt, libcurl's DNS/connect/TLS/first-byte/
  # total times, connection reuse, HTTP status, outcome ("trace" is on in make run only)
  curl -s -X POST http://$addr/checkout -H 'Content-Type: application/json' -H 'X-Checkout-Trace: 1' -d '{"order_id":"ord-1004","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":2}],"payment":{"method":"card","token":"tok_visa","amount":2598,"currency":"USD"}}'

  # 502 failed: the payment service answers 500
  curl -s -X POST http://$addr/checkout -H 'Content-Type: application/json' -d '{"order_id":"ord-1003","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":1}],"payment":{"method":"card","token":"tok_error","amount":100,"currency":"USD"}}'

The live status page: http://$addr/status  (its data: http://$addr/status.json)

Ctrl-C stops both.
MSG
wait "$co_pid"
cleanup
