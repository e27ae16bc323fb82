#!/usr/bin/env python3
"""bench/scaleout_idem.py - Idempotency-Key across replicas, with processes on loopback: a
redis-server, fake-upstreams and 3 checkoutd replicas sharing the Redis store. Two phases:

  (a) retry on another replica: N keyed checkouts, each sent to replica i % 3 and then retried
      with the same key and body on replica (i + 1) % 3; the retry must be a replay (same status
      and body, Idempotent-Replayed: true) and every key must reach the payment upstream once.
  (b) kill -9 mid keyed checkouts: M keyed checkouts (payment answers after SLOW ms) go to replica
      r2, which is killed -9 while they run; their clients retry the same keys on r1/r3 every
      100 ms: 409 idempotency_in_progress while the dead replica's claims live (deadline_ms + 5 s),
      then the checkout runs once more. Then every key is sent once again: all replays of the
      first 200.

Counts come from the clients and from the fake upstreams' per-Idempotency-Key counters
(/_fake/stats "idempotency_repeats"): a key reaches the payment upstream twice only when its first
run died with r2 (and each such key is counted). Exit status non-zero when a check fails. Starts only
its own processes, stops them by PID, binds 127.0.0.1 only.
Usage: bench/scaleout_idem.py BUILD_DIR   (make scaleout runs it after bench/scaleout.sh)
Environment: IDEM_KEYS=300 IDEM_KILLED=40 IDEM_SLOW_MS=1500 IDEM_DEADLINE_MS=3000
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

B = sys.argv[1] if len(sys.argv) > 1 else "build/release"
N_KEYS = int(os.environ.get("IDEM_KEYS", "300"))
N_KILLED = int(os.environ.get("IDEM_KILLED", "40"))
SLOW_MS = int(os.environ.get("IDEM_SLOW_MS", "1500"))
DEADLINE_MS = int(os.environ.get("IDEM_DEADLINE_MS", "3000"))
procs = []
tmp = tempfile.mkdtemp(prefix="checkoutd-idem-scaleout.")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(argv, env=None, name="p"):
    out = open(os.path.join(tmp, name + ".out"), "w+")
    err = open(os.path.join(tmp, name + ".err"), "w")
    p = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
    procs.append(p)
    return p, out.name


def wait_line(path, needle, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        with open(path) as f:
            for line in f:
                if needle in line:
                    return line.strip()
        time.sleep(0.05)
    raise SystemExit(f"scaleout_idem: no '{needle}' in {path}")


def request(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


def order(token, n):
    return json.dumps({"order_id": f"ord-{n}", "address": {"postal_code": "1", "country": "US"},
                       "items": [{"sku": "SKU-1", "quantity": 1}],
                       "payment": {"token": token, "amount": 100 + n, "currency": "USD"}}).encode()


def checkout(port, key, body, timeout=10):
    return request(port, "POST", "/checkout", body,
                   {"Content-Type": "application/json", "Idempotency-Key": key}, timeout)


def main():
    rport = free_port()
    start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--loglevel", "warning"], name="redis")
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", rport), 0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    _, up_out = start([f"{B}/fake-upstreams", "--address-port", "0", "--inventory-port", "0",
                       "--payment-port", "0", "--latency-ms", "2", "--jitter-ms", "5",
                       "--slow-ms", str(SLOW_MS)], name="up")
    wait_line(up_out, "ready")
    ports = {}
    with open(up_out) as f:
        for line in f:
            w = line.split()
            if len(w) >= 4 and w[1] == "listening":
                ports[w[0]] = int(w[3].rsplit(":", 1)[1])
    reps = []
    for r in range(3):
        env = dict(os.environ, CHECKOUTD_LISTEN="127.0.0.1:0",
                   CHECKOUTD_DEADLINE_MS=str(DEADLINE_MS),
                   CHECKOUTD_ADDRESS_URL=f"http://127.0.0.1:{ports['address']}/validate",
                   CHECKOUTD_INVENTORY_URL=f"http://127.0.0.1:{ports['inventory']}/check",
                   CHECKOUTD_PAYMENT_URL=f"http://127.0.0.1:{ports['payment']}/verify",
                   CHECKOUTD_PAYMENT_TIMEOUT_MS=str(DEADLINE_MS),
                   CHECKOUTD_IDEMPOTENCY_STORE="redis",
                   CHECKOUTD_IDEMPOTENCY_REDIS_URL=f"redis://127.0.0.1:{rport}")
        p, out = start([f"{B}/checkoutd"], env=env, name=f"r{r + 1}")
        port = int(wait_line(out, "listening on").rsplit(":", 1)[1])
        reps.append((p, port))

    def pay_stats():
        return json.loads(request(ports["payment"], "GET", "/_fake/stats")[2])

    fails = []
    run = uuid.uuid4().hex[:8]

    # ---- (a) a checkout and its retry on different replicas
    a_first = a_replayed = a_same = 0
    t0 = time.time()
    for i in range(N_KEYS):
        key, body = f"a-{run}-{i}", order("tok_visa", i)
        s1, h1, b1 = checkout(reps[i % 3][1], key, body)
        s2, h2, b2 = checkout(reps[(i + 1) % 3][1], key, body)
        a_first += s1 == 200
        a_replayed += s2 == 200 and h2.get("idempotent-replayed") == "true"
        a_same += b1 == b2
    a_secs = time.time() - t0
    st = pay_stats()
    a_repeats = [k for k in st["idempotency_repeats"] if k.startswith(f"a-{run}-")]
    if a_first != N_KEYS or a_replayed != N_KEYS or a_same != N_KEYS or a_repeats:
        fails.append("(a)")

    # ---- (b) kill -9 of r2 in the middle of keyed checkouts
    keys = [f"b-{run}-{i}" for i in range(N_KILLED)]
    bodies = [order("tok_slow", 1000 + i) for i in range(N_KILLED)]
    first = {}

    def first_try(i):
        try:
            first[i] = checkout(reps[1][1], keys[i], bodies[i], timeout=DEADLINE_MS / 1000 + 5)[0]
        except (OSError, http.client.HTTPException) as e:
            first[i] = type(e).__name__

    before = pay_stats()["requests"]
    threads = [threading.Thread(target=first_try, args=(i,)) for i in range(N_KILLED)]
    for t in threads:
        t.start()
    end = time.time() + 5
    while pay_stats()["requests"] - before < N_KILLED and time.time() < end:
        time.sleep(0.02)
    reached = pay_stats()["requests"] - before  # first runs that reached the payment upstream
    os.kill(reps[1][0].pid, signal.SIGKILL)
    t_kill = time.time()
    reps[1][0].wait()
    for t in threads:
        t.join()
    died = sum(1 for v in first.values() if v != 200)

    retry = {}

    def retry_until_run(i):
        n409 = 0
        while True:
            port = reps[0][1] if i % 2 == 0 else reps[2][1]
            s, h, b = checkout(port, keys[i], bodies[i], timeout=DEADLINE_MS / 1000 + 5)
            if s == 409:
                n409 += 1
                time.sleep(0.1)
                continue
            retry[i] = (s, n409, time.time() - t_kill, h.get("idempotent-replayed"), b)
            return

    threads = [threading.Thread(target=retry_until_run, args=(i,)) for i in range(N_KILLED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran_after = sum(1 for v in retry.values() if v[0] == 200 and v[3] != "true")
    total_409 = sum(v[1] for v in retry.values())
    first_200_at = sorted(v[2] for v in retry.values() if v[0] == 200)
    # every key once more: a replay of the answer the retry got, never a third run
    replays_ok = 0
    for i in range(N_KILLED):
        s, h, b = checkout(reps[2][1], keys[i], bodies[i])
        replays_ok += s == 200 and h.get("idempotent-replayed") == "true" and b == retry[i][4]
    st = pay_stats()
    b_counts = {k: v for k, v in st["idempotency_repeats"].items() if k.startswith(f"b-{run}-")}
    twice = sum(1 for v in b_counts.values() if v == 2)
    more = sum(1 for v in b_counts.values() if v > 2)
    claim_s = (DEADLINE_MS + 5000) / 1000
    if died != N_KILLED or ran_after != N_KILLED or replays_ok != N_KILLED or more != 0 \
            or twice != reached or (first_200_at and first_200_at[0] < claim_s - 1.0):
        fails.append("(b)")

    verdict = "PASS" if not fails else "FAIL " + " ".join(fails)
    print(f"""Idempotency-Key across replicas (`bench/scaleout_idem.py`, Redis store, 3 replicas, deadline_ms
{DEADLINE_MS} so a claim lives {claim_s:.0f} s), verdict: **{verdict}**.

| (a) checkout on replica i, retry on replica i+1 | count |
|---|---|
| keys | {N_KEYS} ({a_secs:.1f} s, 2 requests each, sequential) |
| first requests answered 200 | {a_first} |
| retries answered as replays (`Idempotent-Replayed: true`) | {a_replayed} |
| retries whose body is byte for byte the first answer's | {a_same} |
| keys that reached the payment upstream more than once | {len(a_repeats)} |

| (b) kill -9 of r2 with keyed checkouts in flight (payment answers after {SLOW_MS} ms) | count |
|---|---|
| keyed checkouts sent to r2 | {N_KILLED} |
| ... whose payment call had reached the upstream when r2 was killed | {reached} |
| ... whose client got no answer (connection cut by the kill) | {died} |
| retries (same key and body, every 100 ms, on r1/r3) answered 409 idempotency_in_progress | {total_409} |
| keys whose retries then ran the checkout (200, not a replay) | {ran_after} |
| first such 200 / last, seconds after the kill | {first_200_at[0] if first_200_at else -1:.1f} / {first_200_at[-1] if first_200_at else -1:.1f} |
| keys that reached the payment upstream twice (first run died with r2, then the retry) | {twice} |
| keys that reached it three times or more | {more} |
| a last request per key, on r3: replays of the retry's answer | {replays_ok} |
""")
    return 0 if not fails else 1


try:
    rc = main()
finally:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
    subprocess.run(["rm", "-rf", tmp])
sys.exit(rc)
