/* Operations, against the real programs on free loopback ports: /healthz and /readyz, load
 * shedding at max_inflight, the graceful drain on SIGTERM, and the command line (--check-config,
 * --version, environment overrides). */
#include "support/http.h"
#include "support/proc.h"

#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct world {
    proc upstreams, daemon;
    int up_port[3];
    int port;
    char config_path[64];
} world;

static const char slow_order[] =
    "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [], "
    "\"payment\": {\"token\": \"tok_slow\"}}";
static const char fast_order[] =
    "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [], "
    "\"payment\": {\"token\": \"tok_visa\"}}";

/* Upstreams whose tok_slow answers after 2 s; checkoutd with a 6 s deadline and extra_env. */
static void world_start(world *w, char *const extra_env[])
{
    memset(w, 0, sizeof(*w));
    char *slow[] = {"--slow-ms", "2000", NULL};
    assert_int_equal(proc_start_upstreams(&w->upstreams, slow, "/dev/null", w->up_port), 0);
    snprintf(w->config_path, sizeof(w->config_path), "/tmp/checkoutd-ops-%d.json", (int)getpid());
    FILE *f = fopen(w->config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 6000, \"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\"},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\"},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\", "
            "\"timeout_ms\": 5000}]}\n",
            w->up_port[0], w->up_port[1], w->up_port[2]);
    fclose(f);
    w->port = proc_start_checkoutd(&w->daemon, w->config_path, NULL, extra_env, "/dev/null");
    assert_true(w->port > 0);
}

static void world_stop(world *w)
{
    proc_stop(&w->daemon);
    proc_stop(&w->upstreams);
    unlink(w->config_path);
}

static long fake_stat(const world *w, int role, const char *counter)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/stats", w->up_port[role]);
    http_request("GET", url, NULL, NULL, 0, 5000, &r);
    long v = (long)json_integer_value(json_object_get(r.json, counter));
    http_reply_free(&r);
    return v;
}

static int wait_pending_payments(const world *w, long n)
{
    double until = proc_now_ms() + 5000;
    while (proc_now_ms() < until) {
        if (fake_stat(w, 2, "pending") >= n)
            return 0;
        usleep(10 * 1000);
    }
    return -1;
}

typedef struct bg_post {
    pthread_t thread;
    int port;
    const char *body;
    http_reply reply;
} bg_post;

static void *bg_post_main(void *arg)
{
    bg_post *b = arg;
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", b->port);
    http_request("POST", url, json_only, b->body, strlen(b->body), 20000, &b->reply);
    return NULL;
}

static void bg_start(bg_post *b, int port, const char *body)
{
    memset(b, 0, sizeof(*b));
    b->port = port;
    b->body = body;
    assert_int_equal(pthread_create(&b->thread, NULL, bg_post_main, b), 0);
}

static void get(int port, const char *path, http_reply *r)
{
    char url[96];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    http_request("GET", url, NULL, NULL, 0, 5000, r);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_health_and_readiness(void **state)
{
    (void)state;
    world w;
    world_start(&w, NULL);
    http_reply r;
    get(w.port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    get(w.port, "/readyz", &r);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    world_stop(&w);
}

/* max_inflight 2 and two slow checkouts running: the third gets 503 overloaded with Retry-After
 * at once, and no upstream sees it. */
static void test_overload_sheds_without_upstream_calls(void **state)
{
    (void)state;
    char env_inflight[] = "CHECKOUTD_MAX_INFLIGHT=2";
    char *env[] = {env_inflight, NULL};
    world w;
    world_start(&w, env);
    bg_post slow[2];
    bg_start(&slow[0], w.port, slow_order);
    bg_start(&slow[1], w.port, slow_order);
    assert_int_equal(wait_pending_payments(&w, 2), 0);
    long address_before = fake_stat(&w, 0, "requests");

    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w.port);
    http_reply r;
    http_request("POST", url, json_only, fast_order, strlen(fast_order), 5000, &r);
    assert_int_equal(r.status, 503);
    assert_true(r.elapsed_ms < 1000); /* did not wait for the slow ones (2 s) */
    assert_string_equal(http_reply_header(&r, "Retry-After"), "1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "error"), "code")), "overloaded");
    http_reply_free(&r);
    get(w.port, "/healthz", &r); /* operations still answer */
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_int_equal(fake_stat(&w, 0, "requests"), address_before);

    for (int i = 0; i < 2; i++) {
        pthread_join(slow[i].thread, NULL);
        assert_int_equal(slow[i].reply.status, 200);
        http_reply_free(&slow[i].reply);
    }
    http_request("POST", url, json_only, fast_order, strlen(fast_order), 5000, &r);
    assert_int_equal(r.status, 200); /* capacity is back */
    http_reply_free(&r);
    world_stop(&w);
}

/* SIGTERM with a slow checkout in flight: that checkout still gets its full answer, a new
 * connection is refused, and the process exits 0 well inside deadline_ms + 1 s. */
static void test_drain_on_sigterm(void **state)
{
    (void)state;
    world w;
    world_start(&w, NULL);
    bg_post slow;
    bg_start(&slow, w.port, slow_order);
    assert_int_equal(wait_pending_payments(&w, 1), 0);

    double t0 = proc_now_ms();
    assert_int_equal(proc_signal(&w.daemon, SIGTERM), 0);
    usleep(200 * 1000);

    http_reply r;
    get(w.port, "/healthz", &r);
    assert_int_equal(r.status, 0); /* the listening socket is closed: refused */
    http_reply_free(&r);

    pthread_join(slow.thread, NULL);
    assert_int_equal(slow.reply.status, 200);
    assert_string_equal(json_string_value(json_object_get(slow.reply.json, "status")), "accepted");
    http_reply_free(&slow.reply);

    int status = -1;
    assert_int_equal(proc_wait_exit(&w.daemon, 8000, &status), 0);
    assert_int_equal(status, 0);
    assert_true(proc_now_ms() - t0 < 7000); /* deadline_ms 6000 + 1 s */
    world_stop(&w);
}

/* The same drain, seen from a connection that was open before the signal. */
static void test_drain_answers_open_connections_503(void **state)
{
    (void)state;
    world w;
    world_start(&w, NULL);
    bg_post slow;
    bg_start(&slow, w.port, slow_order);
    assert_int_equal(wait_pending_payments(&w, 1), 0);

    /* Open a connection, send the request head only after the signal. */
    int port = w.port;
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "exec 3<>/dev/tcp/127.0.0.1/%d; sleep 0.6; "
             "printf 'GET /readyz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; "
             "timeout 2 head -c 12 <&3; echo; "
             "exec 3<&-",
             port);
    char *argv[] = {"/bin/bash", "-c", cmd, NULL};
    proc client = {0};
    assert_int_equal(proc_spawn(&client, argv, NULL, "/dev/null"), 0);
    usleep(200 * 1000); /* connected */
    assert_int_equal(proc_signal(&w.daemon, SIGTERM), 0);
    char line[128];
    assert_int_equal(proc_wait_line(&client, "HTTP/1.1", line, sizeof(line), 5000), 0);
    assert_non_null(strstr(line, "503"));
    proc_stop(&client);

    pthread_join(slow.thread, NULL);
    assert_int_equal(slow.reply.status, 200);
    http_reply_free(&slow.reply);
    int status = -1;
    assert_int_equal(proc_wait_exit(&w.daemon, 8000, &status), 0);
    assert_int_equal(status, 0);
    world_stop(&w);
}

static int run_cli(char *const argv[], char *const env[], char *out, size_t cap)
{
    proc p = {0};
    int status = -1;
    if (proc_spawn(&p, argv, env, "/dev/null") != 0)
        return -1;
    out[0] = '\0';
    proc_wait_line(&p, "", out, cap, 5000);
    proc_wait_exit(&p, 5000, &status);
    proc_stop(&p);
    return status;
}

static void test_check_config_and_version(void **state)
{
    (void)state;
    char out[512];
    char *co = getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd";
    char *good[] = {co, "--check-config", "config/checkoutd.json", NULL};
    assert_int_equal(run_cli(good, NULL, out, sizeof(out)), 0);
    char *version[] = {co, "--version", NULL};
    assert_int_equal(run_cli(version, NULL, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "checkoutd "));
    char *help[] = {co, "--help", NULL};
    assert_int_equal(run_cli(help, NULL, out, sizeof(out)), 0);

    const char *bad_path = "/tmp/checkoutd-ops-bad.json";
    FILE *f = fopen(bad_path, "w");
    assert_non_null(f);
    fputs("{\"deadline_ms\": 0}", f);
    fclose(f);
    char *bad[] = {co, "--check-config", (char *)bad_path, NULL};
    assert_int_not_equal(run_cli(bad, NULL, out, sizeof(out)), 0);
    char bad_env[] = "CHECKOUTD_PAYMENT_URL=ftp://nope";
    char *env[] = {bad_env, NULL};
    assert_int_not_equal(run_cli(good, env, out, sizeof(out)), 0);
    unlink(bad_path);
    char *unknown[] = {co, "--bogus", NULL};
    assert_int_not_equal(run_cli(unknown, NULL, out, sizeof(out)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_and_readiness),
        cmocka_unit_test(test_overload_sheds_without_upstream_calls),
        cmocka_unit_test(test_drain_on_sigterm),
        cmocka_unit_test(test_drain_answers_open_connections_503),
        cmocka_unit_test(test_check_config_and_version),
    };
    return cmocka_run_group_tests_name("operations", tests, NULL, NULL);
}
