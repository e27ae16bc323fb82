/* Durable compensation (contract v1.3) against real processes: checkoutd journaled, killed at
 * every journal step (the test build's fault points, CHECKOUTD_JOURNAL_FAULT, checkoutd-faults)
 * and right after an upstream request was sent (a real kill -9 once the upstream holds the
 * request), restarted on the same file; what was undone, what was not, and which answer each key
 * replays — with the memory store and with Redis. Then a journal that cannot write (RLIMIT_FSIZE
 * set on the running daemon with prlimit): 503 journal_unavailable, nothing upstream, /readyz,
 * and back. Then a kill storm under mixed load, and the order of the system calls (strace): the
 * journal's fdatasync returned before the first upstream byte and before the 200's bytes.
 * Upstreams: fake-upstreams (inventory /release and payment /void count undo requests per order;
 * /_fake/keys lists every Idempotency-Key seen) and, to hold a request in flight, the stub. */
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"
#include "support/stub.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define ADDR_OK  "\"address\": {\"name\": \"A\", \"postal_code\": \"1\", \"country\": \"US\"}"
#define ITEMS_OK "\"items\": [{\"sku\": \"SKU-1\", \"quantity\": 1}]"
#define ITEMS_NO "\"items\": [{\"sku\": \"OOS-9\", \"quantity\": 1}]"
#define PAY_OK   "\"payment\": {\"token\": \"tok_visa\", \"amount\": 5, \"currency\": \"USD\"}"
#define PAY_SLOW "\"payment\": {\"token\": \"tok_slow\", \"amount\": 5, \"currency\": \"USD\"}"

typedef struct world {
    proc fu, daemon, redis;
    stub *hold; /* payment's url when set: answers after 5 s */
    int ports[3];
    int port, redis_port;
    char config_path[80], log_path[80], journal[80];
} world;

static world W;

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void rm_journal(void)
{
    static const char *const sfx[] = {"", "-wal", "-shm", ".lock"};
    char f[128];
    for (size_t i = 0; i < 4; i++) {
        snprintf(f, sizeof f, "%s%s", W.journal, sfx[i]);
        unlink(f);
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    snprintf(W.config_path, sizeof W.config_path, "/tmp/checkoutd-jtest-%d.json", (int)getpid());
    snprintf(W.log_path, sizeof W.log_path, "/tmp/checkoutd-jtest-%d.log", (int)getpid());
    snprintf(W.journal, sizeof W.journal, "/tmp/checkoutd-jtest-%d.db", (int)getpid());
    unlink(W.log_path);
    rm_journal();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&W.daemon);
    proc_stop(&W.fu);
    proc_stop(&W.redis);
    stub_stop(W.hold);
    unlink(W.config_path);
    unlink(W.log_path);
    rm_journal();
    return 0;
}

static void start_upstreams(const char *slow_ms)
{
    char *extra[] = {"--slow-ms", (char *)slow_ms, NULL};
    assert_int_equal(proc_start_upstreams(&W.fu, extra, "/dev/null", W.ports), 0);
}

static void write_config(const char *idem_block)
{
    char pay_url[128];
    if (W.hold != NULL)
        snprintf(pay_url, sizeof pay_url, "http://127.0.0.1:%d/verify?delay_ms=5000",
                 stub_port(W.hold));
    else
        snprintf(pay_url, sizeof pay_url, "http://127.0.0.1:%d/verify", W.ports[2]);
    FILE *f = fopen(W.config_path, "w");
    assert_non_null(f);
    fprintf(
        f,
        "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 6000, %s%s%s \"validations\": ["
        "{\"name\": \"address\", \"field\": \"address\", \"url\": "
        "\"http://127.0.0.1:%d/validate\", \"timeout_ms\": 6000},"
        "{\"name\": \"inventory\", \"field\": \"items\", \"url\": "
        "\"http://127.0.0.1:%d/check\", \"timeout_ms\": 6000, \"compensate\": {\"url\": "
        "\"http://127.0.0.1:%d/release\", \"backoff_ms\": 20}},"
        "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"%s\", \"timeout_ms\": "
        "6000, \"compensate\": {\"url\": \"http://127.0.0.1:%d/void\", \"backoff_ms\": 20}}]}\n",
        idem_block[0] ? "\"idempotency\": " : "", idem_block, idem_block[0] ? "," : "", W.ports[0],
        W.ports[1], W.ports[1], pay_url, W.ports[2]);
    fclose(f);
}

/* checkoutd (faults: the test build, with CHECKOUTD_JOURNAL_FAULT=fault) on W.journal. */
static void start_daemon(const char *fault)
{
    const char *bin = fault ? getenv("CHECKOUTD_FAULTS_BIN") : getenv("CHECKOUTD_BIN");
    char jenv[128], fenv[64], line[256];
    if (bin == NULL)
        bin = fault ? "build/release/checkoutd-faults" : "build/release/checkoutd";
    snprintf(jenv, sizeof jenv, "CHECKOUTD_JOURNAL_PATH=%s", W.journal);
    snprintf(fenv, sizeof fenv, "CHECKOUTD_JOURNAL_FAULT=%s", fault ? fault : "");
    char *env[] = {jenv, fault ? fenv : NULL, NULL};
    char *argv[] = {(char *)bin, "--config", W.config_path, NULL};
    assert_int_equal(proc_spawn(&W.daemon, argv, env, W.log_path), 0);
    assert_int_equal(proc_wait_line(&W.daemon, "listening on", line, sizeof line, 20000), 0);
    W.port = proc_port_from_line(line);
    assert_true(W.port > 0);
}

static void kill9(void)
{
    int st = 0;
    proc_signal(&W.daemon, SIGKILL);
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, &st), 0);
    proc_stop(&W.daemon);
}

static int checkout(http_reply *r, const char *order, const char *key, const char *items,
                    const char *pay, long timeout_ms)
{
    char url[64], body[1024], h_key[160];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    if (key != NULL) {
        snprintf(h_key, sizeof h_key, "Idempotency-Key: %s", key);
        headers[1] = h_key;
    }
    snprintf(body, sizeof body, "{\"order_id\": \"%s\", " ADDR_OK ", %s, %s}", order, items, pay);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", W.port);
    return http_request("POST", url, headers, body, strlen(body), timeout_ms, r);
}

/* A keyed retry after a restart: 409 (Retry-After: 1) is the contract's answer while recovery has
 * not yet replaced the dead process's claim (Redis: that write runs on a worker's loop once the
 * listener is up; fail closed), so the client retries, as a real one would, for up to 10 s. */
static int checkout_retrying(http_reply *r, const char *order, const char *key, const char *items,
                             const char *pay)
{
    for (int i = 0; i < 50; i++) {
        int rc = checkout(r, order, key, items, pay, 10000);
        if (rc != 0 || r->status != 409)
            return rc;
        http_reply_free(r);
        sleep_ms(200);
    }
    return checkout(r, order, key, items, pay, 10000);
}

static json_t *fake_get(int port, const char *path)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    json_t *doc = json_incref(r.json);
    http_reply_free(&r);
    assert_non_null(doc);
    return doc;
}

/* undo_requests or undone of order at a role's port. */
static long undo_count(int port, const char *what, const char *order)
{
    json_t *s = fake_get(port, "/_fake/stats");
    long n = (long)json_integer_value(json_object_get(json_object_get(s, what), order));
    json_decref(s);
    return n;
}

static int wait_undone(int port, const char *order, long n, int timeout_ms)
{
    double end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        if (undo_count(port, "undone", order) >= n)
            return 0;
        sleep_ms(20);
    }
    return -1;
}

/* How many requests with this Idempotency-Key reached the role. */
static long key_seen(int port, const char *key)
{
    json_t *k = fake_get(port, "/_fake/keys");
    long n = (long)json_integer_value(json_object_get(k, key));
    json_decref(k);
    return n;
}

static double metric(const char *series)
{
    char url[64];
    http_reply r;
    double v = -1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", W.port);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    if (prom_value(r.body, series, &v) != 0)
        fail_msg("no series %s", series);
    http_reply_free(&r);
    return v;
}

static char *log_text(void)
{
    FILE *f = fopen(W.log_path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The stored 502 "interrupted" answer, replayed. */
static void assert_interrupted(const http_reply *r)
{
    assert_int_equal(r->status, 502);
    assert_non_null(http_reply_header(r, "Idempotent-Replayed"));
    json_t *errors = json_object_get(json_object_get(r->json, "error_group"), "errors");
    assert_int_equal(json_array_size(errors), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(errors, i);
        assert_string_equal(json_string_value(json_object_get(e, "kind")), "interrupted");
        assert_true(json_is_null(json_object_get(e, "http_status")));
        assert_true(json_is_null(json_object_get(e, "upstream")));
    }
    assert_int_equal(json_array_size(json_object_get(r->json, "completed")), 0);
    assert_int_equal(json_array_size(json_object_get(r->json, "cancelled")), 0);
    json_t *comp = json_object_get(r->json, "compensating");
    assert_int_equal(json_array_size(comp), 2);
    assert_string_equal(json_string_value(json_array_get(comp, 0)), "inventory");
    assert_string_equal(json_string_value(json_array_get(comp, 1)), "payment");
}

static int redis_ping(int port)
{
    char reply[256];
    static const char ping[] = "PING\r\nQUIT\r\n";
    int n = http_raw(port, ping, sizeof(ping) - 1, reply, sizeof reply, 1000);
    return n > 0 && strstr(reply, "+PONG") != NULL ? 0 : -1;
}

/* A redis-server of the test's own on a free port; the idempotency block that uses it. */
static const char *redis_block(char *block, size_t cap)
{
    char port_arg[16];
    W.redis_port = http_free_port();
    snprintf(port_arg, sizeof port_arg, "%d", W.redis_port);
    char *argv[] = {"redis-server", "--port", port_arg,      "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no",     "--daemonize", "no",     NULL};
    assert_int_equal(proc_spawn(&W.redis, argv, NULL, "/dev/null"), 0);
    double until = proc_now_ms() + 10000;
    while (redis_ping(W.redis_port) != 0 && proc_now_ms() < until)
        sleep_ms(20);
    assert_int_equal(redis_ping(W.redis_port), 0);
    snprintf(block, cap, "{\"store\": \"redis\", \"redis_url\": \"redis://127.0.0.1:%d\"}",
             W.redis_port);
    return block;
}

/* ---- killed right after each journal step (the test build's fault points) ------------------ */

/* After "begin" is durable, before any upstream request: nothing went upstream; the restart
 * undoes both (result null) with the undo key of before, and the key replays 502 interrupted. */
static void fault_after_begin(const char *idem_block)
{
    http_reply r;
    start_upstreams("5000");
    write_config(idem_block);
    start_daemon("begin");
    checkout(&r, "o-begin", "k-begin", ITEMS_OK, PAY_OK, 10000);
    assert_int_equal(r.status, 0); /* no answer: the process died */
    http_reply_free(&r);
    int st = 0;
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, &st), 0);
    assert_int_equal(st, 137);
    proc_stop(&W.daemon);
    assert_int_equal(key_seen(W.ports[2], "k-begin"), 0); /* nothing was sent upstream */
    assert_int_equal(key_seen(W.ports[1], "k-begin"), 0);

    start_daemon(NULL);
    assert_int_equal(wait_undone(W.ports[2], "o-begin", 1, 10000), 0);
    assert_int_equal(wait_undone(W.ports[1], "o-begin", 1, 10000), 0);
    assert_int_equal(key_seen(W.ports[2], "k-begin:compensate:payment"), 1);
    assert_int_equal(key_seen(W.ports[1], "k-begin:compensate:inventory"), 1);
    json_t *last = fake_get(W.ports[2], "/_fake/last");
    json_t *body = json_object_get(last, "body");
    assert_string_equal(json_string_value(json_object_get(last, "path")), "/void");
    assert_string_equal(json_string_value(json_object_get(body, "order_id")), "o-begin");
    assert_true(json_is_null(json_object_get(body, "result"))); /* nothing came back */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "payment"), "token")),
        "tok_visa"); /* the field, from the journal */
    json_decref(last);
    assert_int_equal(checkout_retrying(&r, "o-begin", "k-begin", ITEMS_OK, PAY_OK), 0);
    assert_interrupted(&r);
    http_reply_free(&r);
    assert_true(metric("checkoutd_compensations_recovered_total{validation=\"payment\"}") == 1);
    char *log = log_text();
    assert_non_null(strstr(log, "\"event\":\"compensation_recovered\""));
    free(log);
    /* the record ended: a second restart takes nothing up */
    proc_stop(&W.daemon);
    start_daemon(NULL);
    sleep_ms(300);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "o-begin"), 1);
}

/* After "accepted" is durable, before the 200 left: never undone; the key replays the 200. */
static void fault_after_accepted(const char *idem_block)
{
    http_reply r;
    start_upstreams("5000");
    write_config(idem_block);
    start_daemon("accepted");
    checkout(&r, "o-acc", "k-acc", ITEMS_OK, PAY_OK, 10000);
    assert_int_equal(r.status, 0);
    http_reply_free(&r);
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, NULL), 0);
    proc_stop(&W.daemon);
    assert_int_equal(key_seen(W.ports[2], "k-acc"), 1); /* payment authorised */

    start_daemon(NULL);
    assert_int_equal(checkout_retrying(&r, "o-acc", "k-acc", ITEMS_OK, PAY_OK), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(http_reply_header(&r, "Idempotent-Replayed"));
    http_reply_free(&r);
    sleep_ms(500);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "o-acc"), 0);
    assert_int_equal(undo_count(W.ports[1], "undo_requests", "o-acc"), 0);
    assert_int_equal(key_seen(W.ports[2], "k-acc"), 1); /* not run again */
}

static void test_fault_after_begin(void **state)
{
    (void)state;
    fault_after_begin("");
}

/* The same with Redis: the 502 replaces the dead process's claim (by its token). */
static void test_fault_after_begin_redis(void **state)
{
    char block[160];
    (void)state;
    fault_after_begin(redis_block(block, sizeof block));
}

static void test_fault_after_accepted(void **state)
{
    (void)state;
    fault_after_accepted("");
}

/* The same with Redis: the claim the dead process held is replaced by the journaled 200. */
static void test_fault_after_accepted_redis(void **state)
{
    char block[160];
    (void)state;
    fault_after_accepted(redis_block(block, sizeof block));
}

/* After the plan is durable: the restart resumes it (the payment's void); the 422 replays. */
static void test_fault_after_plan(void **state)
{
    http_reply r;
    (void)state;
    start_upstreams("5000");
    write_config("");
    start_daemon("plan");
    checkout(&r, "o-plan", "k-plan", ITEMS_NO, PAY_OK, 10000);
    http_reply_free(&r); /* the 422 may or may not have left before the exit */
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, NULL), 0);
    proc_stop(&W.daemon);
    start_daemon(NULL);
    assert_int_equal(wait_undone(W.ports[2], "o-plan", 1, 10000), 0);
    assert_int_equal(undo_count(W.ports[1], "undo_requests", "o-plan"), 0); /* refused: no undo */
    assert_int_equal(checkout(&r, "o-plan", "k-plan", ITEMS_NO, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 422);
    assert_non_null(http_reply_header(&r, "Idempotent-Replayed"));
    http_reply_free(&r);
}

/* After an undo step's end is durable: that step is not sent again. */
static void test_fault_after_undo_end(void **state)
{
    http_reply r;
    (void)state;
    start_upstreams("5000");
    write_config("");
    start_daemon("undo_end");
    checkout(&r, "o-undo", NULL, ITEMS_NO, PAY_OK, 10000);
    http_reply_free(&r);
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, NULL), 0);
    proc_stop(&W.daemon);
    assert_int_equal(undo_count(W.ports[2], "undone", "o-undo"), 1);
    start_daemon(NULL);
    sleep_ms(500);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "o-undo"), 1);
}

/* SIGTERM: an undo step the drain gives up is left in the journal and resumed at the next start. */
static void test_sigterm_leaves_undo_to_next_start(void **state)
{
    http_reply r;
    char url[96], jenv[128], line[256];
    (void)state;
    start_upstreams("5000");
    write_config("");
    /* the void waits 3 s; the drain gives running compensations 100 ms */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_fake/undo?fail=0&delay_ms=3000", W.ports[2]);
    assert_int_equal(http_request("POST", url, NULL, "", 0, 5000, &r), 0);
    http_reply_free(&r);
    snprintf(jenv, sizeof jenv, "CHECKOUTD_JOURNAL_PATH=%s", W.journal);
    char *env[] = {jenv, "CHECKOUTD_COMPENSATION_DRAIN_MS=100", NULL};
    const char *bin = getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd";
    char *argv[] = {(char *)bin, "--config", W.config_path, NULL};
    assert_int_equal(proc_spawn(&W.daemon, argv, env, W.log_path), 0);
    assert_int_equal(proc_wait_line(&W.daemon, "listening on", line, sizeof line, 20000), 0);
    W.port = proc_port_from_line(line);
    assert_int_equal(checkout(&r, "o-term", "k-term", ITEMS_NO, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 422);
    http_reply_free(&r);
    double end = proc_now_ms() + 5000;
    while (undo_count(W.ports[2], "undo_requests", "o-term") < 1 && proc_now_ms() < end)
        sleep_ms(10);
    proc_stop(&W.daemon); /* SIGTERM: the void still waits, the drain gives it up */
    assert_int_equal(W.daemon.exit_status, 0);
    char *log = log_text();
    assert_non_null(strstr(log, "\"last_outcome\":\"cancelled\"")); /* given up by the drain */
    free(log);
    assert_int_equal(key_seen(W.ports[2], "k-term:compensate:payment"), 1);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_fake/undo?fail=0&delay_ms=0", W.ports[2]);
    assert_int_equal(http_request("POST", url, NULL, "", 0, 5000, &r), 0);
    http_reply_free(&r);
    start_daemon(NULL);
    end = proc_now_ms() + 10000; /* resumed, with the same undo key: a repeat for the upstream */
    while (key_seen(W.ports[2], "k-term:compensate:payment") < 2 && proc_now_ms() < end)
        sleep_ms(20);
    assert_int_equal(key_seen(W.ports[2], "k-term:compensate:payment"), 2);
    assert_true(metric("checkoutd_compensations_recovered_total{validation=\"payment\"}") == 1);
}

/* ---- killed right after an upstream request was sent ----------------------------------------- */

typedef struct bg {
    pthread_t t;
    const char *order, *key;
    http_reply r;
} bg;

static void *bg_checkout(void *arg)
{
    bg *b = arg;
    checkout(&b->r, b->order, b->key, ITEMS_OK, PAY_OK, 15000);
    return NULL;
}

static void kill_mid_flight(const char *idem_block)
{
    http_reply r;
    W.hold = stub_start();
    assert_non_null(W.hold);
    start_upstreams("5000");
    write_config(idem_block);
    start_daemon(NULL);
    bg b = {.order = "o-mid", .key = "k-mid"};
    assert_int_equal(pthread_create(&b.t, NULL, bg_checkout, &b), 0);
    double end = proc_now_ms() + 10000;
    while (stub_requests(W.hold) < 1 && proc_now_ms() < end) /* payment holds the request */
        sleep_ms(2);
    assert_int_equal(stub_requests(W.hold), 1);
    kill9();
    pthread_join(b.t, NULL);
    assert_int_not_equal(b.r.status, 200);
    http_reply_free(&b.r);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "o-mid"), 0);

    start_daemon(NULL);
    assert_int_equal(wait_undone(W.ports[2], "o-mid", 1, 10000), 0);
    assert_int_equal(wait_undone(W.ports[1], "o-mid", 1, 10000), 0);
    assert_int_equal(checkout(&r, "o-mid", "k-mid", ITEMS_OK, PAY_OK, 10000), 0);
    assert_interrupted(&r);
    http_reply_free(&r);
    assert_int_equal(stub_requests(W.hold), 1); /* the retry ran nothing again */
}

static void test_kill_mid_flight_memory(void **state)
{
    (void)state;
    kill_mid_flight("");
}

static void test_kill_mid_flight_redis(void **state)
{
    char block[160];
    (void)state;
    kill_mid_flight(redis_block(block, sizeof block));
}

/* ---- a journal that cannot write ------------------------------------------------------------ */

static long get_status(const char *path)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", W.port, path);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    long s = r.status;
    http_reply_free(&r);
    return s;
}

/* /status.json's journal member: its state and path, records pending, the last commit's age. */
static void journal_status(const char *state)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/status.json", W.port);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    json_t *j = json_object_get(r.json, "journal");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "state")), state);
    assert_string_equal(json_string_value(json_object_get(j, "path")), W.journal);
    assert_true(json_is_integer(json_object_get(j, "pending")));
    assert_true(json_number_value(json_object_get(j, "last_commit_age_s")) >= 0);
    http_reply_free(&r);
}

static void test_journal_unavailable(void **state)
{
    http_reply r;
    (void)state;
    start_upstreams("5000");
    write_config("");
    start_daemon(NULL);
    assert_int_equal(checkout(&r, "o-w1", NULL, ITEMS_OK, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    /* the file may not grow past 1 byte any more: every journal write fails (EFBIG) */
    struct rlimit tiny = {1, RLIM_INFINITY}, back = {RLIM_INFINITY, RLIM_INFINITY};
    assert_int_equal(prlimit(W.daemon.pid, RLIMIT_FSIZE, &tiny, NULL), 0);
    if (checkout(&r, "o-w2", "k-w2", ITEMS_OK, PAY_OK, 10000) != 0)
        fail_msg("checkout: %ld %s", r.status, r.error);
    assert_int_equal(r.status, 503);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "error"), "code")),
        "journal_unavailable");
    assert_string_equal(http_reply_header(&r, "Retry-After"), "1");
    http_reply_free(&r);
    assert_int_equal(key_seen(W.ports[2], "k-w2"), 0); /* fail closed: nothing upstream */
    assert_int_equal(get_status("/readyz"), 503);
    assert_true(metric("checkoutd_journal_up") == 0);
    journal_status("unavailable");
    assert_true(metric("checkoutd_checkouts_total{outcome=\"journal_unavailable\"}") == 1);
    assert_int_equal(checkout(&r, "o-w3", NULL, ITEMS_OK, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 503); /* refused at once while it cannot write */
    http_reply_free(&r);

    assert_int_equal(prlimit(W.daemon.pid, RLIMIT_FSIZE, &back, NULL), 0);
    double end = proc_now_ms() + 10000;
    while (get_status("/readyz") != 200 && proc_now_ms() < end) /* the probe, once a second */
        sleep_ms(50);
    assert_int_equal(get_status("/readyz"), 200);
    journal_status("up");
    assert_int_equal(checkout(&r, "o-w4", "k-w2", ITEMS_OK, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 200); /* the 503 was not stored: the key runs now */
    http_reply_free(&r);
    proc_stop(&W.daemon);
    char *log = log_text();
    const char *down = strstr(log, "\"event\":\"journal_unavailable\"");
    if (down != NULL) /* the log file itself may not have grown meanwhile */
        assert_null(strstr(down + 1, "\"event\":\"journal_unavailable\""));
    assert_non_null(strstr(log, "\"event\":\"journal_recovered\""));
    free(log);
}

/* A second process on the same journal refuses to start, naming the file. */
static void test_second_process_refused(void **state)
{
    char cmd[512], out[1024];
    (void)state;
    start_upstreams("5000");
    write_config("");
    start_daemon(NULL);
    snprintf(cmd, sizeof cmd, "CHECKOUTD_JOURNAL_PATH=%s %s --config %s 2>&1", W.journal,
             getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd",
             W.config_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    assert_int_not_equal(pclose(p), 0);
    assert_non_null(strstr(out, W.journal));
    assert_non_null(strstr(out, "in use"));
}

/* ---- a kill storm under mixed load ---------------------------------------------------------- */

#define STORM_MAX     20000
#define STORM_CLIENTS 8
#define STORM_KILLS   5

typedef struct storm {
    atomic_int port; /* 0 while the daemon restarts */
    atomic_int stop;
    atomic_int next;
    atomic_char got200[STORM_MAX];
} storm;

static storm *S;

static void *storm_client(void *arg)
{
    (void)arg;
    while (!atomic_load(&S->stop)) {
        int port = atomic_load(&S->port);
        if (port == 0) {
            sleep_ms(5);
            continue;
        }
        int i = atomic_fetch_add(&S->next, 1);
        if (i >= STORM_MAX)
            break;
        char order[32], url[64], body[512], h_key[64];
        snprintf(order, sizeof order, "st-%d", i);
        snprintf(h_key, sizeof h_key, "Idempotency-Key: %s", order);
        const char *headers[] = {"Content-Type: application/json", h_key, NULL};
        /* a mix: accepted, refused by inventory (payment voided), slow payment */
        const char *items = i % 4 == 2 ? ITEMS_NO : ITEMS_OK;
        const char *pay = i % 4 == 3 ? PAY_SLOW : PAY_OK;
        snprintf(body, sizeof body, "{\"order_id\": \"%s\", " ADDR_OK ", %s, %s}", order, items,
                 pay);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", port);
        http_reply r;
        http_request("POST", url, headers, body, strlen(body), 5000, &r);
        atomic_store(&S->got200[i], r.status == 200);
        http_reply_free(&r);
    }
    return NULL;
}

/* Waits until no compensation is pending for a while (the last daemon's). */
static void settle(void)
{
    double end = proc_now_ms() + 30000;
    int quiet = 0;
    while (quiet < 10 && proc_now_ms() < end) {
        quiet = metric("checkoutd_compensations_pending") == 0 ? quiet + 1 : 0;
        sleep_ms(50);
    }
    assert_true(quiet >= 10);
}

/* >= 5 real kill -9s at random instants under mixed load, a restart after each: every order whose
 * payment request reached the upstream and whose client got no 200 gets its void (or, when it was
 * accepted in the instant between its record and its answer, replays its 200 on a retry); no order
 * whose client got a 200 gets any undo. */
static void test_kill_storm(void **state)
{
    pthread_t t[STORM_CLIENTS];
    (void)state;
    S = calloc(1, sizeof *S);
    assert_non_null(S);
    start_upstreams("300");
    write_config("");
    start_daemon(NULL);
    atomic_store(&S->port, W.port);
    for (int i = 0; i < STORM_CLIENTS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, storm_client, NULL), 0);
    srand((unsigned)time(NULL));
    for (int k = 0; k < STORM_KILLS; k++) {
        sleep_ms(300 + rand() % 500);
        atomic_store(&S->port, 0);
        kill9();
        start_daemon(NULL);
        atomic_store(&S->port, W.port);
    }
    sleep_ms(300);
    atomic_store(&S->stop, 1);
    for (int i = 0; i < STORM_CLIENTS; i++)
        pthread_join(t[i], NULL);
    settle();

    int n = atomic_load(&S->next);
    if (n > STORM_MAX)
        n = STORM_MAX;
    json_t *keys = fake_get(W.ports[2], "/_fake/keys");
    json_t *pay = fake_get(W.ports[2], "/_fake/stats"), *inv = fake_get(W.ports[1], "/_fake/stats");
    json_t *voided = json_object_get(pay, "undone"),
           *pay_undo = json_object_get(pay, "undo_requests"),
           *inv_undo = json_object_get(inv, "undo_requests");
    int ok200 = 0, paid_not_200 = 0, voids = 0, replayed_200 = 0, undone_200 = 0, missing = 0;
    for (int i = 0; i < n; i++) {
        char order[32];
        snprintf(order, sizeof order, "st-%d", i);
        int paid = json_integer_value(json_object_get(keys, order)) > 0;
        if (atomic_load(&S->got200[i])) {
            ok200++;
            if (json_object_get(pay_undo, order) != NULL || json_object_get(inv_undo, order))
                undone_200++;
            continue;
        }
        if (!paid)
            continue;
        paid_not_200++;
        if (json_integer_value(json_object_get(voided, order)) > 0) {
            voids++;
            continue;
        }
        /* accepted on disk, killed before its 200 left: its key replays the 200 */
        http_reply r;
        const char *items = i % 4 == 2 ? ITEMS_NO : ITEMS_OK;
        const char *p = i % 4 == 3 ? PAY_SLOW : PAY_OK;
        checkout(&r, order, order, items, p, 10000);
        if (r.status == 200 && http_reply_header(&r, "Idempotent-Replayed") != NULL)
            replayed_200++;
        else
            missing++;
        http_reply_free(&r);
    }
    fprintf(stderr,
            "kill storm: %d kills, %d checkouts, %d answered 200, %d paid without a 200: %d "
            "voided, %d accepted before the kill (200 on retry), %d missing; 200s undone: %d\n",
            STORM_KILLS, n, ok200, paid_not_200, voids, replayed_200, missing, undone_200);
    json_decref(keys);
    json_decref(pay);
    json_decref(inv);
    free(S);
    assert_int_equal(missing, 0);
    assert_int_equal(undone_200, 0);
    assert_true(ok200 > 0);
    assert_true(voids > 0); /* refused orders at least: the test saw voids */
}

/* ---- the order of the system calls ---------------------------------------------------------- */

/* The line index where a journal fdatasync/fsync returned after index from, or -1. strace -f
 * prints a call cut by another thread's as "<unfinished ...>" and "<... fdatasync resumed>". */
static int sync_done_after(char **lines, int n, int from)
{
    int open_pid[64], nopen = 0;
    for (int i = 0; i < n; i++) {
        const char *l = lines[i];
        int pid = atoi(l);
        int is_sync = strstr(l, "fdatasync(") != NULL || strstr(l, "fsync(") != NULL;
        if (is_sync && strstr(l, W.journal) != NULL) {
            if (strstr(l, "<unfinished") != NULL) {
                if (nopen < 64)
                    open_pid[nopen++] = pid;
                continue;
            }
            if (i > from && strstr(l, ") = 0") != NULL)
                return i;
            continue;
        }
        if (strstr(l, "sync resumed>") != NULL) {
            for (int k = 0; k < nopen; k++)
                if (open_pid[k] == pid) {
                    open_pid[k] = open_pid[--nopen];
                    if (i > from && strstr(l, ") = 0") != NULL)
                        return i;
                    break;
                }
        }
    }
    return -1;
}

static int is_send(const char *l)
{
    return strstr(l, "sendto(") != NULL || strstr(l, "sendmsg(") != NULL ||
           strstr(l, "writev(") != NULL || strstr(l, "write(") != NULL;
}

static void test_fsync_before_effect(void **state)
{
    char out_path[96], jenv[128], line[256], conn[64], upstream[64];
    (void)state;
    if (system("strace -V >/dev/null 2>&1") != 0)
        skip(); /* scripts/deps.sh test installs it */
    start_upstreams("5000");
    write_config("");
    snprintf(out_path, sizeof out_path, "/tmp/checkoutd-jtest-%d.strace", (int)getpid());
    snprintf(jenv, sizeof jenv, "CHECKOUTD_JOURNAL_PATH=%s", W.journal);
    const char *bin = getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd";
    char *env[] = {jenv, "CHECKOUTD_LOOPS=1", NULL};
    char *argv[] = {"strace",
                    "-f",
                    "-yy",
                    "-s",
                    "16",
                    "-e",
                    "trace=fdatasync,fsync,sendto,sendmsg,write,writev,accept,accept4",
                    "-o",
                    out_path,
                    (char *)bin,
                    "--config",
                    W.config_path,
                    NULL};
    assert_int_equal(proc_spawn(&W.daemon, argv, env, W.log_path), 0);
    assert_int_equal(proc_wait_line(&W.daemon, "listening on", line, sizeof line, 30000), 0);
    W.port = proc_port_from_line(line);
    http_reply r;
    assert_int_equal(checkout(&r, "o-strace", NULL, ITEMS_OK, PAY_OK, 20000), 0);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    proc_stop(&W.daemon); /* strace ends with its tracee */
    sleep_ms(200);

    FILE *f = fopen(out_path, "r");
    assert_non_null(f);
    char **lines = calloc(200000, sizeof *lines), buf[4096];
    int n = 0;
    while (n < 200000 && fgets(buf, sizeof buf, f) != NULL)
        lines[n++] = strdup(buf);
    fclose(f);
    unlink(out_path);
    /* the first byte to any upstream, and the 200's first bytes to the client */
    snprintf(upstream, sizeof upstream, "->127.0.0.1:%d]", W.ports[1]);
    snprintf(conn, sizeof conn, "127.0.0.1:%d->", W.port);
    int first_up = -1, first_200 = -1, accepted_at = -1;
    for (int i = 0; i < n; i++) {
        if (accepted_at < 0 && strstr(lines[i], "accept") != NULL && strstr(lines[i], conn))
            accepted_at = i; /* the checkout's connection: nothing before it was a checkout's */
        if (!is_send(lines[i]))
            continue;
        int up = strstr(lines[i], upstream) != NULL;
        for (int k = 0; k < 3 && !up; k++) {
            char p[32];
            snprintf(p, sizeof p, "->127.0.0.1:%d]", W.ports[k]);
            up = strstr(lines[i], p) != NULL;
        }
        if (up && first_up < 0)
            first_up = i;
        if (strstr(lines[i], conn) != NULL && strstr(lines[i], "HTTP/1.1 200") != NULL &&
            first_200 < 0)
            first_200 = i;
    }
    if (first_up < 0 || first_200 < 0)
        fail_msg("strace: no upstream send (%d) or no 200 (%d) in %d lines", first_up, first_200,
                 n);
    int begin_sync = sync_done_after(lines, n, accepted_at);
    int accepted_sync = sync_done_after(lines, n, first_up);
    fprintf(stderr,
            "strace: journal sync returned at line %d, first upstream byte at %d, "
            "accepted's sync at %d, the 200 at %d\n",
            begin_sync, first_up, accepted_sync, first_200);
    assert_true(accepted_at >= 0);
    assert_true(begin_sync > accepted_at && begin_sync < first_up);
    assert_true(accepted_sync > first_up && accepted_sync < first_200);
    for (int i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fault_after_begin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_begin_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_accepted_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_undo_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_leaves_undo_to_next_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_flight_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_flight_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_process_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fsync_before_effect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_storm, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
