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

/* ---- killed right after each journal step (the test build's fault points) ------------------ */

/* After "begin" is durable, before any upstream request: nothing went upstream; the restart
 * undoes both (result null) with the undo key of before, and the key replays 502 interrupted. */
static void test_fault_after_begin(void **state)
{
    http_reply r;
    (void)state;
    start_upstreams("5000");
    write_config("");
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
    assert_int_equal(checkout(&r, "o-begin", "k-begin", ITEMS_OK, PAY_OK, 10000), 0);
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
static void test_fault_after_accepted(void **state)
{
    http_reply r;
    (void)state;
    start_upstreams("5000");
    write_config("");
    start_daemon("accepted");
    checkout(&r, "o-acc", "k-acc", ITEMS_OK, PAY_OK, 10000);
    assert_int_equal(r.status, 0);
    http_reply_free(&r);
    assert_int_equal(proc_wait_exit(&W.daemon, 10000, NULL), 0);
    proc_stop(&W.daemon);
    assert_int_equal(key_seen(W.ports[2], "k-acc"), 1); /* payment authorised */

    start_daemon(NULL);
    assert_int_equal(checkout(&r, "o-acc", "k-acc", ITEMS_OK, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(http_reply_header(&r, "Idempotent-Replayed"));
    http_reply_free(&r);
    sleep_ms(500);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "o-acc"), 0);
    assert_int_equal(undo_count(W.ports[1], "undo_requests", "o-acc"), 0);
    assert_int_equal(key_seen(W.ports[2], "k-acc"), 1); /* not run again */
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

static int redis_ping(int port)
{
    char reply[256];
    static const char ping[] = "PING\r\nQUIT\r\n";
    int n = http_raw(port, ping, sizeof(ping) - 1, reply, sizeof reply, 1000);
    return n > 0 && strstr(reply, "+PONG") != NULL ? 0 : -1;
}

static void test_kill_mid_flight_redis(void **state)
{
    char port_arg[16], block[160];
    (void)state;
    W.redis_port = http_free_port();
    snprintf(port_arg, sizeof port_arg, "%d", W.redis_port);
    char *argv[] = {"redis-server", "--port", port_arg,      "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no",     "--daemonize", "no",     NULL};
    assert_int_equal(proc_spawn(&W.redis, argv, NULL, "/dev/null"), 0);
    double until = proc_now_ms() + 10000;
    while (redis_ping(W.redis_port) != 0 && proc_now_ms() < until)
        sleep_ms(20);
    assert_int_equal(redis_ping(W.redis_port), 0);
    snprintf(block, sizeof block, "{\"store\": \"redis\", \"redis_url\": \"redis://127.0.0.1:%d\"}",
             W.redis_port);
    kill_mid_flight(block);
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
    assert_true(metric("checkoutd_checkouts_total{outcome=\"journal_unavailable\"}") == 1);
    assert_int_equal(checkout(&r, "o-w3", NULL, ITEMS_OK, PAY_OK, 10000), 0);
    assert_int_equal(r.status, 503); /* refused at once while it cannot write */
    http_reply_free(&r);

    assert_int_equal(prlimit(W.daemon.pid, RLIMIT_FSIZE, &back, NULL), 0);
    double end = proc_now_ms() + 10000;
    while (get_status("/readyz") != 200 && proc_now_ms() < end) /* the probe, once a second */
        sleep_ms(50);
    assert_int_equal(get_status("/readyz"), 200);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fault_after_begin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_accepted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_plan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_after_undo_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_flight_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_flight_redis, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_process_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
