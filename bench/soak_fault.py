#!/usr/bin/env python3
"""bench/soak_fault.py: the faulty upstream of bench/soak.sh (a test tool, stdlib only).

It plays a fourth validation ("fraud") for checkoutd during the soak. Each POST gets an answer that
depends on the mode written in MODE_FILE (read again at most every 0.1 s; a missing file means ok):

  ok        200 {"fraud":"ok","score":7} (keep-alive)
  reset     reads the request, then closes with a TCP RST (SO_LINGER 0): checkoutd sees a reset
  hang      reads the request and never answers; waits until the client (checkoutd) closes
  error     503 {"error":"unavailable","message":"fraud check unavailable"}
  truncate  200 with Content-Length 64 and only 14 bytes of body, then closes

GET on any path answers its counters as JSON: {"requests":N,"by_mode":{...},"hang_closed":N,...}.
It prints "listening on 127.0.0.1:PORT" once bound (PORT 0: the kernel picks one), then serves until
SIGTERM/SIGINT. Usage: soak_fault.py PORT MODE_FILE
"""
import asyncio
import json
import signal
import socket
import struct
import sys
import time

MODES = ("ok", "reset", "hang", "error", "truncate")


class State:
    def __init__(self, mode_file):
        self.mode_file = mode_file
        self.mode = "ok"
        self.checked = 0.0
        self.requests = 0
        self.by_mode = {m: 0 for m in MODES}
        self.hang_closed = 0  # held connections that the client closed (cancel or timeout)
        self.connections = 0

    def current(self):
        now = time.monotonic()
        if now - self.checked > 0.1:
            self.checked = now
            try:
                with open(self.mode_file, encoding="ascii") as f:
                    m = f.read().strip()
            except OSError:
                m = "ok"
            self.mode = m if m in MODES else "ok"
        return self.mode


def answer(status, reason, body, extra=b""):
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (status, reason, len(body), extra)) + body


async def handle(st, reader, writer):
    st.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            length = 0
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v.strip() or "0")
                elif k == "expect" and "100-continue" in v.lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if length:
                await reader.readexactly(length)
            if method != "POST":
                doc = {"requests": st.requests, "by_mode": st.by_mode,
                       "hang_closed": st.hang_closed, "connections": st.connections,
                       "mode": st.current()}
                writer.write(answer(200, b"OK", json.dumps(doc).encode()))
                await writer.drain()
                continue
            mode = st.current()
            st.requests += 1
            st.by_mode[mode] += 1
            if mode == "ok":
                writer.write(answer(200, b"OK", b'{"fraud":"ok","score":7}'))
                await writer.drain()
            elif mode == "error":
                writer.write(answer(503, b"Service Unavailable",
                                    b'{"error":"unavailable","message":"fraud check unavailable"}'))
                await writer.drain()
            elif mode == "truncate":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 64\r\n\r\n{\"fraud\":\"ok\",")
                await writer.drain()
                return
            elif mode == "reset":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return
            else:  # hang: hold the request until the client gives up on it
                while await reader.read(4096):
                    pass
                st.hang_closed += 1
                return
    except (ConnectionError, OSError, ValueError):
        return
    finally:
        st.connections -= 1
        writer.close()


async def main():
    if len(sys.argv) != 3:
        sys.exit("usage: soak_fault.py PORT MODE_FILE")
    st = State(sys.argv[2])
    server = await asyncio.start_server(lambda r, w: handle(st, r, w), "127.0.0.1",
                                        int(sys.argv[1]), backlog=1024, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    async with server:
        await stop.wait()
    print(json.dumps({"event": "stop", "requests": st.requests, "by_mode": st.by_mode,
                      "hang_closed": st.hang_closed}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
