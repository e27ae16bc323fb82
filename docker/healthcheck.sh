#!/bin/bash
# HEALTHCHECK of the checkoutd image: exit 0 when GET /healthz answers 200, else 1.
# bash, not sh: /dev/tcp is a bash feature (dash has none), and bash is Essential in Debian, so
# this costs the image nothing, where curl would add a package. Reads CHECKOUTD_ADMIN_LISTEN (the
# admin listener: plain HTTP even when listen has tls), else CHECKOUTD_LISTEN (the container's
# environment is the one the daemon got) to find the port; a wildcard address is probed on
# loopback.
set -eu
listen=${CHECKOUTD_ADMIN_LISTEN:-${CHECKOUTD_LISTEN:-127.0.0.1:8080}}
port=${listen##*:}
host=${listen%:*}
case $host in
  0.0.0.0 | '') host=127.0.0.1 ;;
  '[::]') host=::1 ;;
  \[*\]) host=${host#[}; host=${host%]} ;;
esac
exec 3<>"/dev/tcp/$host/$port"
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
# The status line: "HTTP/1.x 200 OK". -t bounds a daemon that accepts but never answers.
IFS=' ' read -r -t 2 _ status _ <&3
[ "$status" = 200 ]
