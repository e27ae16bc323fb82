#!/usr/bin/env bash
# docker/smoke.sh — builds the checkoutd image and proves, with podman on this machine, that what
# docker/ ships works: the image answers the README's checkouts, is healthy, runs as non-root and
# drains on SIGTERM as PID 1; docker/compose.yaml answers (podman-compose, and Docker's
# docker-compose through podman's Docker API); docker/compose.scale.yaml balances 3 replicas and
# keeps answering while one drains; docker/k8s/ played by `podman kube play` answers. v1.3: the
# admin port serves /metrics (404 on the checkout port) and the HEALTHCHECK; listen's tls answers a
# checkout over HTTPS (a throwaway certificate made here) and nothing over plain HTTP.
# Exit status 0 when every check passed. Removes every container, pod, network and image it made
# (trap EXIT); keeps the base image debian:bookworm-slim (podman storage) and the cache dir
# (its tarball, containers.conf), and podman's own pause image for pods.
#
# bash, not sh: pipefail, /dev/tcp (the free-port probe), here-strings, $SECONDS for timings.
# Usage: docker/smoke.sh            (as root; installs the Debian packages it needs when missing)
# Environment:
#   SMOKE_CACHE=/var/cache/checkoutd-smoke  base image tarball + containers.conf (kept between runs)
#   SMOKE_PORT=18080                        first of 7 loopback ports used (18080..18086)
#   SMOKE_KEEP=1                            keep the built images (tags :smoke) for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SMOKE_CACHE:-/var/cache/checkoutd-smoke}
PORT0=${SMOKE_PORT:-18080}
P_RUN=$PORT0 P_KUBE=$((PORT0 + 1)) P_COMPOSE=$((PORT0 + 2)) P_SCALE=$((PORT0 + 3)) P_STATS=$((PORT0 + 4))
P_ADMIN=$((PORT0 + 5)) P_TLS=$((PORT0 + 6))
IMAGE=localhost/checkoutd:smoke
HAPROXY_IMAGE=localhost/checkoutd-haproxy:smoke
REDIS_IMAGE=localhost/checkoutd-redis:smoke
BASE=docker.io/library/debian:bookworm-slim
N=checkoutd-smoke                      # prefix of every container, pod and project name made here
START=$SECONDS

say() { printf '%s\n' "smoke: $*"; }
ok() { printf 'ok   %3ss  %s\n' "$((SECONDS - START))" "$*"; }
fail() {
  printf 'FAIL %3ss  %s\n' "$((SECONDS - START))" "$*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || {
  echo "smoke: run as root (rootful podman; installs packages with apt-get)" >&2
  exit 1
}

# ---- packages: the note's recipe (shared/notes/containers.md), without relying on Recommends:
# iptables (netavark's port forwarding), aardvark-dns (compose service names), catatonit (the pods'
# infra container) are what a --no-install-recommends podman lacks on Debian 12. docker-compose
# (Docker's compose tool, 1.29) drives compose.yaml through podman's Docker-compatible API.
pkgs="podman runc debootstrap podman-compose haproxy iptables aardvark-dns catatonit curl ca-certificates docker-compose openssl"
missing=""
for p in $pkgs; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

mkdir -p "$CACHE"
# One smoke run at a time: fixed names and ports. Waits for another run rather than failing.
exec 9>"$CACHE/lock"
flock -w 900 9 || fail "another smoke run holds $CACHE/lock"

# ---- podman configuration of our own (not /etc): runc (crun fails on this hybrid cgroup setup),
# ulimits below the host's hard limits (else setrlimit EPERM), cgroupfs/file events (no systemd).
cat >"$CACHE/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$CACHE/containers.conf
export BUILDAH_FORMAT=docker # podman-compose's builds keep HEALTHCHECK too (OCI format has none)
WORK=$(mktemp -d /tmp/checkoutd-smoke.XXXXXX)
LOG=$WORK/podman.log # podman's chatter (systemd/syslog warnings) goes here, shown on failure
: >"$LOG"

# ---- cleanup: everything this script may have made, by name; runs on any exit.
kube_played=""
svc="" # podman system service (Docker API for docker-compose), stopped by PID
kube_net_before=$(podman network exists podman-default-kube-network && echo yes || echo no)
cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    echo "---- last podman output ($LOG):" >&2
    tail -n 40 "$LOG" >&2
    for c in $(podman ps -a --format '{{.Names}}' 2>/dev/null | grep -E "^($N|checkoutd-pod-)"); do
      echo "---- logs of $c:" >&2
      podman logs --tail 15 "$c" >&2 2>&1
    done
  fi
  [ -n "$kube_played" ] && podman kube down "$kube_played" >>"$LOG" 2>&1
  podman volume rm -f checkoutd-journal >>"$LOG" 2>&1
  for p in "$N-compose" "$N-scale" "$N-dc"; do
    podman ps -a -q --filter "label=io.podman.compose.project=$p" | xargs -r podman rm -f -t 5 >>"$LOG" 2>&1
    podman ps -a -q --filter "label=com.docker.compose.project=$p" | xargs -r podman rm -f -t 5 >>"$LOG" 2>&1
    podman network rm -f "${p}_default" >>"$LOG" 2>&1
    # the journal volumes of the compose files (v1.3), named <project>_<volume>
    podman volume ls -q | grep "^${p}_" | xargs -r podman volume rm -f >>"$LOG" 2>&1
  done
  if [ -n "$svc" ]; then
    kill "$svc" 2>/dev/null
    wait "$svc" 2>/dev/null
  fi
  podman pod rm -f -t 5 "$N-pod" >>"$LOG" 2>&1
  podman ps -a -q --filter "name=^$N" | xargs -r podman rm -f -t 5 >>"$LOG" 2>&1
  podman pod ls -q --filter "name=^$N" | xargs -r podman pod rm -f -t 5 >>"$LOG" 2>&1
  [ "$kube_net_before" = no ] && podman network rm -f podman-default-kube-network >>"$LOG" 2>&1
  if [ "${SMOKE_KEEP:-0}" != 1 ]; then
    podman rmi -f "$IMAGE" "$HAPROXY_IMAGE" "$REDIS_IMAGE" >>"$LOG" 2>&1
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted run (same names) would make `podman run --name` fail.
podman ps -a -q --filter "name=^$N" | xargs -r podman rm -f -t 0 >>"$LOG" 2>&1 || true
podman pod ls -q --filter "name=^$N" | xargs -r podman pod rm -f -t 0 >>"$LOG" 2>&1 || true

for p in $P_RUN $P_KUBE $P_COMPOSE $P_SCALE $P_STATS $P_ADMIN $P_TLS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    fail "port 127.0.0.1:$p is in use (SMOKE_PORT=... picks another range)"
  fi
done

# ---- base image: debian:bookworm-slim made locally (no registry here), as in the note. The
# rootfs tarball is cached, so only the first run pays debootstrap (~30 s); a later run whose
# podman storage lost the image re-imports it in ~2 s. Trimmed like the official slim image
# (no docs, man pages, locales) so image sizes compare.
if ! podman image exists "$BASE"; then
  if [ ! -s "$CACHE/bookworm-slim.tar" ]; then
    say "debootstrap bookworm (first run only)"
    rootfs=$WORK/rootfs
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 ||
      { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    [ -f /etc/apt/sources.list.d/debian.sources ] && cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    [ -f /etc/apt/sources.list.d/debian.sources ] && rm -f "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    for d in man groff info lintian linda locale; do
      [ -d "$rootfs/usr/share/$d" ] && find "$rootfs/usr/share/$d" -mindepth 1 -delete
    done
    tar --numeric-owner -C "$rootfs" -cf "$CACHE/bookworm-slim.tar.tmp" .
    mv "$CACHE/bookworm-slim.tar.tmp" "$CACHE/bookworm-slim.tar"
    rm -rf "$rootfs"
  fi
  podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$CACHE/bookworm-slim.tar" "$BASE" >>"$LOG" 2>&1 || fail "podman import of the base image"
fi
ok "base image $BASE"

# ---- build. --layers=false: no intermediate images are left behind (this run has nothing to
# reuse them for, and they would be images we made and did not remove); --format docker keeps
# HEALTHCHECK; --pull=never: the base is local.
podman build --pull=never --layers=false --format docker -f docker/Dockerfile -t "$IMAGE" . \
  >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; fail "podman build docker/Dockerfile"; }
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
ok "built $IMAGE: $((size / 1000000)) MB ($size bytes; base $(( $(podman image inspect "$BASE" --format '{{.Size}}') / 1000000 )) MB)"
podman build --pull=never --layers=false --format docker -t "$HAPROXY_IMAGE" docker/haproxy \
  >"$WORK/build-haproxy.log" 2>&1 || { tail -n 30 "$WORK/build-haproxy.log" >&2; fail "podman build docker/haproxy"; }
ok "built $HAPROXY_IMAGE: $(( $(podman image inspect "$HAPROXY_IMAGE" --format '{{.Size}}') / 1000000 )) MB"
podman build --pull=never --layers=false --format docker -t "$REDIS_IMAGE" docker/redis \
  >"$WORK/build-redis.log" 2>&1 || { tail -n 30 "$WORK/build-redis.log" >&2; fail "podman build docker/redis"; }
ok "built $REDIS_IMAGE: $(( $(podman image inspect "$REDIS_IMAGE" --format '{{.Size}}') / 1000000 )) MB"
[ "$(podman image inspect "$IMAGE" --format '{{.Config.Healthcheck.Test}}')" != "[]" ] ||
  fail "the image has no HEALTHCHECK (built without --format docker?)"

# ---- helpers
ACCEPTED='{"order_id":"ord-1001","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":2}],"payment":{"method":"card","token":"tok_visa","amount":2598,"currency":"USD"}}'
REJECTED='{"order_id":"ord-1002","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"OOS-9","quantity":1}],"payment":{"method":"card","token":"tok_slow","amount":2598,"currency":"USD"}}'
SLOW='{"order_id":"ord-1004","address":{"name":"Ada","line1":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"},"items":[{"sku":"SKU-1","quantity":1}],"payment":{"method":"card","token":"tok_slow","amount":2598,"currency":"USD"}}'

# post PORT BODY OUTFILE -> prints "STATUS SECONDS"; the body lands in OUTFILE.
post() {
  curl -s -o "$3" -w '%{http_code} %{time_total}' --max-time 10 -X POST "http://127.0.0.1:$1/checkout" \
    -H 'Content-Type: application/json' -d "$2" || true
}
# wait_ready PORT WHAT: /readyz 200 within 20 s (containers start in about a second).
wait_ready() {
  local _
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/readyz" || true)" = 200 ] && return 0
    sleep 0.2
  done
  fail "$2: /readyz on 127.0.0.1:$1 never answered 200"
}
# check_admin PUBLIC ADMIN WHAT: /metrics and /status.json on the admin port only (v1.3).
check_admin() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$1/metrics")" = 404 ] ||
    fail "$3: /metrics answers on the checkout port"
  # read whole, then grep: with pipefail, grep -q's early exit can fail curl with SIGPIPE
  local metrics
  metrics=$(curl -s --max-time 5 "http://127.0.0.1:$2/metrics" || true)
  grep -q '^checkoutd_checkouts_total{outcome="accepted"}' <<<"$metrics" ||
    fail "$3: no /metrics on the admin port"
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$2/status.json")" = 200 ] ||
    fail "$3: no /status.json on the admin port"
  ok "$3: /metrics + /status.json on the admin port, /metrics 404 on the checkout port"
}
# check_checkouts PORT WHAT: the README's accepted and rejected checkouts, answers checked.
check_checkouts() {
  local r body=$WORK/body
  r=$(post "$1" "$ACCEPTED" "$body")
  [ "${r%% *}" = 200 ] && grep -q '"status":"accepted"' "$body" &&
    grep -q '"authorized":true' "$body" || fail "$2: accepted checkout got ${r%% *}: $(head -c 300 "$body")"
  ok "$2: accepted checkout -> 200 accepted"
  r=$(post "$1" "$REJECTED" "$body")
  # The payment upstream (tok_slow) takes 5 s: an answer well under that proves it was cancelled.
  # (address is in "completed" or, when inventory answers first, also in "cancelled".)
  [ "${r%% *}" = 422 ] && grep -q '"status":"rejected"' "$body" &&
    grep -q '"validation":"inventory","kind":"rejected"' "$body" &&
    grep -q '"cancelled":\[[^]]*"payment"' "$body" &&
    awk -v t="${r#* }" 'BEGIN { exit !(t < 1.0) }' ||
    fail "$2: rejected checkout got ${r%% *} in ${r#* } s: $(head -c 300 "$body")"
  ok "$2: rejected checkout -> 422, inventory rejected, payment cancelled, in ${r#* } s"
}

# ==== 1. podman run: checkoutd + fake-upstreams in one pod (they share loopback, so the baked-in
# config's 127.0.0.1 upstream URLs work unchanged).
podman pod create --name "$N-pod" -p "127.0.0.1:$P_RUN:8080" -p "127.0.0.1:$P_ADMIN:9090" \
  -p "127.0.0.1:$P_TLS:8443" >>"$LOG" 2>&1 || fail "podman pod create"
podman run -d --pod "$N-pod" --name "$N-upstreams" --entrypoint fake-upstreams "$IMAGE" >>"$LOG" 2>&1 ||
  fail "podman run fake-upstreams"
podman run -d --pod "$N-pod" --name "$N-checkoutd" "$IMAGE" >>"$LOG" 2>&1 || fail "podman run checkoutd"
wait_ready "$P_RUN" "podman run"
check_checkouts "$P_RUN" "podman run"
check_admin "$P_RUN" "$P_ADMIN" "podman run"

# HTTPS on listen (v1.3 tls): a throwaway CA and server certificate for 127.0.0.1, mounted read-only;
# a second checkoutd in the pod (its own ports: 8443, admin 9091). Its HEALTHCHECK probes its plain
# admin port.
tls=$WORK/tls
mkdir -p "$tls"
(cd "$tls" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj '/CN=smoke CA' &&
  openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj '/CN=127.0.0.1' &&
  printf 'subjectAltName=IP:127.0.0.1\n' >server.ext &&
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile server.ext &&
  chmod 0644 server.key) >"$WORK/openssl.log" 2>&1 || fail "openssl: a throwaway certificate"
podman run -d --pod "$N-pod" --name "$N-tls" -v "$tls:/tls:ro" -e CHECKOUTD_LISTEN=0.0.0.0:8443 \
  -e CHECKOUTD_ADMIN_LISTEN=0.0.0.0:9091 -e CHECKOUTD_TLS_CERT_FILE=/tls/server.pem \
  -e CHECKOUTD_TLS_KEY_FILE=/tls/server.key "$IMAGE" >>"$LOG" 2>&1 || fail "podman run checkoutd (tls)"
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 --cacert "$tls/ca.pem" "https://127.0.0.1:$P_TLS/readyz" || true)" = 200 ] && break
  sleep 0.2
done
r=$(curl -s -o "$WORK/tls.body" -w '%{http_code}' --max-time 10 --cacert "$tls/ca.pem" -X POST \
  "https://127.0.0.1:$P_TLS/checkout" -H 'Content-Type: application/json' -d "$ACCEPTED" || true)
[ "$r" = 200 ] && grep -q '"status":"accepted"' "$WORK/tls.body" ||
  fail "tls: checkout over HTTPS got $r: $(head -c 300 "$WORK/tls.body")"
r=$(curl -s -o "$WORK/plain.body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$P_TLS/metrics" || true)
[ "$r" = 000 ] && ! grep -qs checkoutd "$WORK/plain.body" || fail "tls: plain HTTP to the HTTPS port got $r"
podman healthcheck run "$N-tls" >>"$LOG" 2>&1 || fail "tls: podman healthcheck run: not healthy"
ok "tls: checkout over HTTPS (curl --cacert) -> 200 accepted; plain HTTP -> no answer; healthy"
podman rm -f -t 5 "$N-tls" >>"$LOG" 2>&1

podman healthcheck run "$N-checkoutd" >>"$LOG" 2>&1 || fail "podman healthcheck run: not healthy"
[ "$(podman inspect "$N-checkoutd" --format '{{.State.Health.Status}}')" = healthy ] ||
  fail "health status is not healthy"
ok "podman healthcheck run -> healthy"

uid=$(podman exec "$N-checkoutd" id -u)
pid1=$(podman top "$N-checkoutd" user pid comm | awk '$2 == 1 { print $1 "/" $3 }')
[ "$uid" != 0 ] && [ "$pid1" = checkoutd/checkoutd ] || fail "expected non-root checkoutd as PID 1, got uid $uid, PID 1 $pid1"
ok "runs as uid $uid (user checkoutd), checkoutd is PID 1"

# Drain: a checkout still running at SIGTERM (tok_slow with an in-stock item: the payment's
# timeout_ms, 1500 ms, ends it as a 504) must get its answer, then checkoutd exits 0.
post "$P_RUN" "$SLOW" "$WORK/inflight.body" >"$WORK/inflight.status" &
inflight=$!
sleep 0.3
t0=$SECONDS
podman stop -t 10 "$N-checkoutd" >>"$LOG" 2>&1 || fail "podman stop"
wait "$inflight"
code=$(podman inspect "$N-checkoutd" --format '{{.State.ExitCode}}')
logs=$(podman logs "$N-checkoutd" 2>&1)
[ "$code" = 0 ] || fail "checkoutd exited $code after SIGTERM"
grep -q '"event":"draining"' <<<"$logs" || fail "no draining log line"
grep -q '"event":"stop"' <<<"$logs" || fail "no stop log line"
[ "$(cut -d' ' -f1 "$WORK/inflight.status")" = 504 ] && grep -q '"kind":"timeout"' "$WORK/inflight.body" ||
  fail "the in-flight checkout got $(cat "$WORK/inflight.status"): $(head -c 200 "$WORK/inflight.body")"
[ $((SECONDS - t0)) -lt 9 ] || fail "the drain took $((SECONDS - t0)) s: podman had to SIGKILL"
ok "SIGTERM: in-flight checkout answered (504 after its 1.5 s timeout), \"stop\" logged, exit 0 in $((SECONDS - t0)) s"
podman pod rm -f -t 5 "$N-pod" >>"$LOG" 2>&1

# ==== 2. docker/compose.yaml: service-to-service by name, published port.
CHECKOUTD_IMAGE=$IMAGE REDIS_IMAGE=$REDIS_IMAGE CHECKOUTD_PORT=$P_COMPOSE CHECKOUTD_ADMIN_PORT=$P_ADMIN timeout 180 \
  podman-compose -p "$N-compose" -f docker/compose.yaml up -d >>"$LOG" 2>&1 || fail "podman-compose up (compose.yaml)"
wait_ready "$P_COMPOSE" "compose.yaml"
check_checkouts "$P_COMPOSE" "compose.yaml"
check_admin "$P_COMPOSE" "$P_ADMIN" "compose.yaml"
CHECKOUTD_IMAGE=$IMAGE REDIS_IMAGE=$REDIS_IMAGE timeout 60 podman-compose -p "$N-compose" -f docker/compose.yaml down -t 5 >>"$LOG" 2>&1 ||
  fail "podman-compose down (compose.yaml)"
podman network rm -f "$N-compose_default" >>"$LOG" 2>&1 || true   # podman-compose 1.0.3 leaves it
ok "compose.yaml down"

# ==== 2b. The same compose.yaml driven by Docker's own compose tool (docker-compose 1.29, Debian)
# through podman's Docker-compatible API: the file is a Docker compose file, not a podman-only one.
# (--no-build: the image is the one built above; the compat API's builder would drop HEALTHCHECK.)
sock=$WORK/docker.sock
podman system service --time=0 "unix://$sock" >>"$LOG" 2>&1 &
svc=$!
for _ in $(seq 1 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "podman system service did not create $sock"
DOCKER_HOST=unix://$sock CHECKOUTD_IMAGE=$IMAGE CHECKOUTD_PORT=$P_COMPOSE CHECKOUTD_ADMIN_PORT=$P_ADMIN timeout 180 \
  docker-compose -p "$N-dc" -f docker/compose.yaml up -d --no-build >>"$LOG" 2>&1 || fail "docker-compose up (compose.yaml)"
wait_ready "$P_COMPOSE" "docker-compose"
check_checkouts "$P_COMPOSE" "compose.yaml (docker-compose)"
DOCKER_HOST=unix://$sock CHECKOUTD_IMAGE=$IMAGE timeout 60 \
  docker-compose -p "$N-dc" -f docker/compose.yaml down -t 10 >>"$LOG" 2>&1 || fail "docker-compose down"
kill "$svc"
wait "$svc" 2>/dev/null || true
svc=""
ok "compose.yaml (docker-compose) down"

# ==== 3. docker/compose.scale.yaml: 3 replicas behind haproxy; SIGTERM one under requests.
CHECKOUTD_IMAGE=$IMAGE HAPROXY_IMAGE=$HAPROXY_IMAGE REDIS_IMAGE=$REDIS_IMAGE CHECKOUTD_PORT=$P_SCALE HAPROXY_STATS_PORT=$P_STATS timeout 180 \
  podman-compose -p "$N-scale" -f docker/compose.scale.yaml up -d >>"$LOG" 2>&1 || fail "podman-compose up (compose.scale.yaml)"
stats() { curl -s --max-time 2 "http://127.0.0.1:$P_STATS/stats;csv" || true; }
# server_col NAME FIELD: a column of the backend server's CSV row (status = 18, stot = 8).
server_col() { stats | awk -F, -v s="$1" -v f="$2" '$1 == "checkoutd" && $2 == s { print $f }'; }
for _ in $(seq 1 100); do
  [ "$(stats | awk -F, '$1 == "checkoutd" && $18 == "UP" && $2 ~ /^c[123]$/' | wc -l)" = 3 ] && break
  sleep 0.2
done
[ "$(stats | awk -F, '$1 == "checkoutd" && $18 == "UP" && $2 ~ /^c[123]$/' | wc -l)" = 3 ] ||
  fail "compose.scale.yaml: haproxy does not see 3 replicas UP: $(stats | cut -d, -f1,2,18,37)"
# Strict from the first request (v1.3 "Names": the replicas resolve "upstreams" on their own
# resolver thread, never on a worker, so the old stall of a fresh replica cannot come back): right
# after haproxy sees the 3 replicas UP, 20 POSTs in a row, each accepted within 2 s.
slowest=0
for i in $(seq 1 20); do
  r=$(post "$P_SCALE" "$ACCEPTED" /dev/null)
  [ "${r%% *}" = 200 ] || fail "compose.scale.yaml: POST $i right after the start answered ${r%% *} (in ${r#* } s)"
  awk -v t="${r#* }" 'BEGIN { exit !(t < 2) }' || fail "compose.scale.yaml: POST $i right after the start took ${r#* } s (a stalled worker)"
  slowest=$(awk -v a="$slowest" -v b="${r#* }" 'BEGIN { print (b > a ? b : a) }')
done
ok "compose.scale.yaml: 20 POSTs in a row right after the start, all accepted, the slowest in $slowest s"
check_checkouts "$P_SCALE" "compose.scale.yaml (haproxy)"
for _ in $(seq 1 9); do post "$P_SCALE" "$ACCEPTED" /dev/null; echo; done >"$WORK/scale1"
[ "$(grep -c '^200 ' "$WORK/scale1")" = 9 ] || fail "compose.scale.yaml: $(sort "$WORK/scale1" | cut -d' ' -f1 | uniq -c)"
for s in c1 c2 c3; do
  [ "$(server_col "$s" 8)" -ge 3 ] || fail "compose.scale.yaml: replica $s got $(server_col "$s" 8) requests of 31"
done
ok "compose.scale.yaml: 3 replicas UP on /readyz, requests spread: c1 $(server_col c1 8), c2 $(server_col c2 8), c3 $(server_col c3 8)"
# The replicas share the redis service's Idempotency-Key records: a keyed checkout and its retry
# (round robin: on another replica) run once; the retry is the first answer, replayed.
key="smoke-$$-$RANDOM"
for n in 1 2; do
  curl -s -D "$WORK/idem$n.h" -o "$WORK/idem$n.b" --max-time 10 -X POST "http://127.0.0.1:$P_SCALE/checkout" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $key" -d "$ACCEPTED" >/dev/null || true
done
grep -q '^HTTP/1.1 200' "$WORK/idem1.h" && grep -qi '^Idempotent-Replayed: true' "$WORK/idem2.h" &&
  cmp -s "$WORK/idem1.b" "$WORK/idem2.b" ||
  fail "compose.scale.yaml: keyed retry not replayed: $(head -n 1 "$WORK/idem2.h") $(head -c 200 "$WORK/idem2.b")"
ok "compose.scale.yaml: keyed checkout and its retry through haproxy: one run, the retry replayed (Redis)"
# SIGTERM replica 2 while checkouts keep coming: every one still gets a 200.
(for _ in $(seq 1 60); do post "$P_SCALE" "$ACCEPTED" /dev/null; echo; sleep 0.05; done >"$WORK/scale2") &
load=$!
sleep 0.5
podman stop -t 10 "$N-scale_checkoutd2_1" >>"$LOG" 2>&1 || fail "podman stop replica 2"
wait "$load"
[ "$(podman inspect "$N-scale_checkoutd2_1" --format '{{.State.ExitCode}}')" = 0 ] || fail "replica 2 did not exit 0"
[ "$(grep -c '^200 ' "$WORK/scale2")" = 60 ] ||
  fail "compose.scale.yaml: during the drain: $(cut -d' ' -f1 "$WORK/scale2" | sort | uniq -c | tr '\n' ' ')"
[ "$(server_col c2 18)" != UP ] || fail "haproxy still has replica 2 UP after it stopped"
ok "compose.scale.yaml: replica 2 SIGTERMed under load: 60/60 checkouts 200, it exited 0, haproxy has it $(server_col c2 18)"
CHECKOUTD_IMAGE=$IMAGE HAPROXY_IMAGE=$HAPROXY_IMAGE REDIS_IMAGE=$REDIS_IMAGE timeout 60 \
  podman-compose -p "$N-scale" -f docker/compose.scale.yaml down -t 5 >>"$LOG" 2>&1 || fail "podman-compose down (scale)"
podman network rm -f "$N-scale_default" >>"$LOG" 2>&1 || true
ok "compose.scale.yaml down"

# ==== 4. docker/k8s: the StatefulSet + ConfigMap played by podman. Changes made here and nowhere
# else, because a cluster needs none of them: one replica (podman plays every replica on this one
# host, and they cannot share a host port), a hostPort on loopback (podman runs no Service), and,
# since podman 4.3 plays Deployments, Pods and PersistentVolumeClaims but no StatefulSet: kind
# Deployment, without the StatefulSet's own keys, its volumeClaimTemplate played as one PVC
# (checkoutd-journal, a podman volume) mounted the same way. The image is this run's tag.
# Everything else — envFrom, ports, command, securityContext, the volume mount — is as committed.
kube=$WORK/statefulset.play.yaml
awk -v port="$P_KUBE" -v image="$IMAGE" '
  /^kind: StatefulSet$/ { print "kind: Deployment"; k++; next }
  /^  serviceName: / || /^  podManagementPolicy: / { next }
  /^  volumeClaimTemplates:$/ { skip = 1 }
  skip { next }
  /^  replicas: [0-9]+$/ { sub(/[0-9]+$/, "1"); r++ }
  /image: localhost\/checkoutd:latest/ { sub(/localhost\/checkoutd:latest/, image); i++ }
  /^      containers:$/ {
    print "      volumes:"; print "        - name: journal"
    print "          persistentVolumeClaim:"; print "            claimName: checkoutd-journal"; v++ }
  { print }
  /^ *containerPort: 8080$/ {
    ind = $0; sub(/containerPort.*/, "", ind)
    print ind "hostPort: " port; print ind "hostIP: 127.0.0.1"; h++ }
  END {
    if (k != 1 || r != 1 || i != 2 || h != 1 || v != 1 || skip != 1) {
      print "transform failed" > "/dev/stderr"; exit 1 }
    print "---"; print "apiVersion: v1"; print "kind: PersistentVolumeClaim"
    print "metadata:"; print "  name: checkoutd-journal"; print "spec:"
    print "  accessModes: [\"ReadWriteOnce\"]"; print "  resources:"
    print "    requests:"; print "      storage: 1Gi" }
' docker/k8s/statefulset.yaml >"$kube" || fail "could not adapt docker/k8s/statefulset.yaml for podman"
# A third change: the ConfigMap's Idempotency-Key store is the Redis of redis.yaml, reached by its
# Service name, which podman does not run; the pod played here uses the memory store.
kube_cm=$WORK/configmap.play.yaml
sed 's/^  CHECKOUTD_IDEMPOTENCY_STORE: "redis"$/  CHECKOUTD_IDEMPOTENCY_STORE: "memory"/' \
  docker/k8s/configmap.yaml >"$kube_cm"
grep -q 'CHECKOUTD_IDEMPOTENCY_STORE: "memory"' "$kube_cm" || fail "could not adapt docker/k8s/configmap.yaml for podman"
# --replace: a pod left by an interrupted run (same Deployment name) is recreated, not an error.
podman kube play --replace --configmap "$kube_cm" "$kube" >>"$LOG" 2>&1 || fail "podman kube play"
kube_played=$kube
wait_ready "$P_KUBE" "kube play"
# The probes, by hand (podman runs no probe timers): the paths and port the manifest names.
for path in healthz readyz; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_KUBE/$path")" = 200 ] || fail "kube: /$path"
done
# the probes' port (admin, 9090) answers inside the pod; /metrics is not on the Service's port
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_KUBE/metrics")" = 404 ] || fail "kube: /metrics on the public port"
kctr0=$(podman ps --format '{{.Names}}' | grep -- '-checkoutd$' | grep '^checkoutd-pod' | head -n 1)
podman exec "$kctr0" /usr/local/bin/checkoutd-healthcheck || fail "kube: the admin port (9090) does not answer /healthz"
kctr=$(podman ps --format '{{.Names}}' | grep -- '-checkoutd$' | grep '^checkoutd-pod' | head -n 1)
[ "$(podman exec "$kctr" printenv CHECKOUTD_PAYMENT_URL)" = http://localhost:9103/verify ] ||
  fail "kube: the ConfigMap's CHECKOUTD_* did not reach the container"
[ "$(podman exec "$kctr" id -u)" = 10001 ] || fail "kube: not running as uid 10001"
check_checkouts "$P_KUBE" "kube play"
# The journal's volume is mounted where journal.path's default lives, writable by uid 10001.
podman exec "$kctr" sh -c 'test -d /var/lib/checkoutd && test -w /var/lib/checkoutd' ||
  fail "kube: /var/lib/checkoutd is not a writable volume for uid 10001"
podman kube down "$kube" >>"$LOG" 2>&1 || fail "podman kube down"
kube_played=""
podman volume rm -f checkoutd-journal >>"$LOG" 2>&1 || true
ok "kube play: ConfigMap env in the container, /healthz + /readyz 200, admin port healthy, /metrics 404 on 8080, uid 10001, journal volume; kube down"

ok "all checks passed in $((SECONDS - START)) s"
