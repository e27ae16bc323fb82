/* Unit tests of the task-group library (lib/tg) and the error group (lib/eg), against the
 * in-process stub upstream on loopback. Time bounds are generous: a 5 s upstream against a 2 s
 * assertion. */
#include "eg.h"
#include "tg.h"

#include "support/http.h"
#include "support/proc.h"
#include "support/stub.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <errno.h>

typedef struct fixture {
    stub *upstream;
    tg_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done_calls;
} fixture;

static fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    pthread_mutex_init(&fx.lock, NULL);
    pthread_cond_init(&fx.cond, NULL);
    fx.upstream = stub_start();
    tg_loop_options o = {.max_body_bytes = 4096, .max_connections = 0};
    fx.loop = tg_loop_new(&o);
    return fx.upstream && fx.loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_loop_free(fx.loop);
    stub_stop(fx.upstream);
    pthread_mutex_destroy(&fx.lock);
    pthread_cond_destroy(&fx.cond);
    return 0;
}

static void on_done(tg_group *g, void *user)
{
    (void)g;
    (void)user;
    pthread_mutex_lock(&fx.lock);
    fx.done_calls++;
    pthread_cond_signal(&fx.cond);
    pthread_mutex_unlock(&fx.lock);
}

/* "/x?status=..." on the stub */
static void url_of(char *out, size_t cap, const char *query)
{
    snprintf(out, cap, "http://127.0.0.1:%d/x?%s", stub_port(fx.upstream), query);
}

static tg_group *group_of(long deadline_ms, long timeout_ms, size_t n, const char *const queries[])
{
    static const char *const headers[] = {"Content-Type: application/json", "X-Request-Id: t-1",
                                          NULL};
    tg_group *g = tg_group_new(n, deadline_ms, on_done, NULL);
    assert_non_null(g);
    for (size_t i = 0; i < n; i++) {
        char url[256];
        url_of(url, sizeof(url), queries[i]);
        char *body = strdup("{\"order_id\":\"o-1\",\"x\":1}");
        assert_int_equal(tg_call_set(g, i, url, body, strlen(body), headers, timeout_ms), 0);
    }
    return g;
}

/* Runs g on the loop thread and waits for done (at most 20 s). Returns the wall time in ms. */
static double run_threaded(tg_group *g)
{
    double t0 = proc_now_ms();
    tg_loop_start(fx.loop); /* -EALREADY when a previous run started it */
    pthread_mutex_lock(&fx.lock);
    int before = fx.done_calls;
    pthread_mutex_unlock(&fx.lock);
    assert_int_equal(tg_submit(fx.loop, g), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&fx.lock);
    while (fx.done_calls == before) {
        if (pthread_cond_timedwait(&fx.cond, &fx.lock, &until) != 0)
            break;
    }
    int finished = fx.done_calls > before;
    pthread_mutex_unlock(&fx.lock);
    assert_true(finished);
    return proc_now_ms() - t0;
}

static void test_all_succeed_concurrently(void **state)
{
    (void)state;
    const char *q[] = {"delay_ms=1000", "delay_ms=1000", "delay_ms=1000"};
    tg_group *g = group_of(10000, 5000, 3, q);
    double ms = run_threaded(g);
    assert_true(ms < 2500); /* one after the other would take 3000 */
    assert_int_equal(tg_group_failures(g), 0);
    for (size_t i = 0; i < 3; i++) {
        const tg_result *r = tg_group_result(g, i);
        assert_int_equal(r->state, TG_OK);
        assert_int_equal(r->http_status, 200);
        assert_true(json_is_true(json_object_get(r->body, "ok")));
        assert_true(r->elapsed_ms >= 900);
    }
    char last_id[64];
    assert_int_equal(stub_last_header(fx.upstream, "X-Request-Id", last_id, sizeof(last_id)), 0);
    assert_string_equal(last_id, "t-1");
    char *body = stub_last_body(fx.upstream);
    assert_non_null(body);
    assert_string_equal(body, "{\"order_id\":\"o-1\",\"x\":1}");
    free(body);
    tg_group_free(g);
}

static void test_first_failure_cancels_the_rest(void **state)
{
    (void)state;
    const char *q[] = {"delay_ms=5000", "status=409&delay_ms=50", "delay_ms=5000"};
    tg_group *g = group_of(20000, 10000, 3, q);
    double ms = run_threaded(g);
    assert_true(ms < 2000); /* did not wait for the 5 s calls */
    assert_int_equal(tg_group_failures(g), 1);
    const tg_result *r = tg_group_result(g, 1);
    assert_int_equal(r->state, TG_FAILED);
    assert_int_equal(r->kind, TG_REJECTED);
    assert_int_equal(r->http_status, 409);
    assert_string_equal(json_string_value(json_object_get(r->body, "error")), "stub_error");
    assert_int_equal(tg_group_result(g, 0)->state, TG_CANCELLED);
    assert_int_equal(tg_group_result(g, 2)->state, TG_CANCELLED);
    /* their requests had left (the stub held them for 5 s): compensation must know */
    assert_int_equal(tg_group_result(g, 0)->sent, 1);
    assert_int_equal(tg_group_result(g, 2)->sent, 1);
    assert_int_equal(r->sent, 1);
    /* the upstream saw both cancelled connections close long before it would have answered */
    assert_int_equal(stub_wait_closed_early(fx.upstream, 2, 2000), 0);
    tg_group_free(g);
}

/* Drives the loop by hand so that both answers are waiting in their sockets before the turn that
 * reads them: the two failures are then observed in the same turn, deterministically. */
static tg_group *run_two_failures_same_turn(const char *fail_a, const char *fail_b)
{
    const char *q[] = {fail_a, "delay_ms=5000", fail_b};
    tg_group *g = group_of(20000, 10000, 3, q);
    int before = fx.done_calls;
    assert_int_equal(tg_submit(fx.loop, g), 0);
    double until = proc_now_ms() + 5000;
    while (stub_requests(fx.upstream) < 3 && proc_now_ms() < until)
        tg_loop_run_once(fx.loop, 10);
    assert_int_equal(stub_requests(fx.upstream), 3);
    assert_int_equal(fx.done_calls, before);
    /* both answers (after 200 ms) arrive while the loop does not run: wait until the stub has
     * queued both (not a bare sleep: a loaded machine may take longer than any fixed one), then
     * give its thread time to write them to their sockets */
    until = proc_now_ms() + 10000;
    while (stub_answered(fx.upstream) < 2 && proc_now_ms() < until)
        usleep(10 * 1000);
    assert_true(stub_answered(fx.upstream) >= 2);
    usleep(300 * 1000);
    tg_loop_run_once(fx.loop, 0);
    assert_int_equal(fx.done_calls, before + 1);
    return g;
}

static void test_simultaneous_failures_all_reported(void **state)
{
    (void)state;
    tg_group *g = run_two_failures_same_turn("status=500&delay_ms=200", "status=503&delay_ms=200");
    assert_int_equal(tg_group_failures(g), 2);
    assert_int_equal(tg_group_result(g, 0)->kind, TG_UPSTREAM_ERROR);
    assert_int_equal(tg_group_result(g, 2)->kind, TG_UPSTREAM_ERROR);
    assert_int_equal(tg_group_result(g, 1)->state, TG_CANCELLED);
    unsigned seqs = tg_group_result(g, 0)->fail_seq + tg_group_result(g, 2)->fail_seq;
    assert_int_equal(seqs, 3); /* 1 and 2, in the order observed */
    tg_group_free(g);
}

static void test_rejection_and_5xx_is_422(void **state)
{
    (void)state;
    tg_group *g = run_two_failures_same_turn("status=409&delay_ms=200", "status=500&delay_ms=200");
    assert_int_equal(tg_group_failures(g), 2);
    const char *names[] = {"inventory", "address", "payment"};
    eg_answer a;
    assert_int_equal(eg_build(g, names, "ord-7", 12.34, &a), 0);
    assert_int_equal(a.http_status, 422);
    assert_string_equal(a.status, "rejected");
    json_t *doc = json_loads(a.body, 0, NULL);
    assert_non_null(doc);
    json_t *errors = json_object_get(json_object_get(doc, "error_group"), "errors");
    assert_int_equal(json_array_size(errors), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(doc, "error_group"), "message")),
        "checkout failed: 2 of 3 validations failed");
    json_t *cancelled = json_object_get(doc, "cancelled");
    assert_int_equal(json_array_size(cancelled), 1);
    assert_string_equal(json_string_value(json_array_get(cancelled, 0)), "address");
    assert_int_equal(json_array_size(json_object_get(doc, "completed")), 0);
    assert_null(json_object_get(doc, "results"));
    assert_true(json_real_value(json_object_get(doc, "elapsed_ms")) == 12.3);
    json_decref(doc);
    free(a.body);
    tg_group_free(g);
}

static void expect_single_failure(const char *query, long deadline_ms, long timeout_ms,
                                  tg_kind kind, long http_status, const char *message_part)
{
    const char *q[] = {query};
    tg_group *g = group_of(deadline_ms, timeout_ms, 1, q);
    double ms = run_threaded(g);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->state, TG_FAILED);
    assert_int_equal(r->kind, kind);
    assert_int_equal(r->http_status, http_status);
    if (message_part != NULL && strstr(r->message, message_part) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", r->message, message_part);
    assert_true(ms < 4000);
    tg_group_free(g);
}

static void test_call_timeout(void **state)
{
    (void)state;
    expect_single_failure("delay_ms=5000", 20000, 300, TG_TIMEOUT, 0, "within 300 ms");
}

static void test_group_deadline(void **state)
{
    (void)state;
    expect_single_failure("delay_ms=5000", 300, 10000, TG_TIMEOUT, 0, "deadline of 300 ms");
}

static void test_non_json_2xx_is_invalid(void **state)
{
    (void)state;
    expect_single_failure("body=garbage", 5000, 5000, TG_INVALID_RESPONSE, 200, "without a JSON");
    expect_single_failure("body=array", 5000, 5000, TG_INVALID_RESPONSE, 200, "without a JSON");
    expect_single_failure("body=empty", 5000, 5000, TG_INVALID_RESPONSE, 200, "without a JSON");
}

static void test_3xx_is_invalid(void **state)
{
    (void)state;
    expect_single_failure("status=302", 5000, 5000, TG_INVALID_RESPONSE, 302, "redirects");
}

static void test_5xx_is_upstream_error(void **state)
{
    (void)state;
    expect_single_failure("status=502", 5000, 5000, TG_UPSTREAM_ERROR, 502, "HTTP 502");
}

static void test_body_over_limit_is_invalid(void **state)
{
    (void)state;
    expect_single_failure("body=big&big_bytes=100000", 5000, 5000, TG_INVALID_RESPONSE, 200,
                          "larger than 4096");
}

static void test_connection_refused_is_transport(void **state)
{
    (void)state;
    int port = http_free_port();
    assert_true(port > 0);
    tg_group *g = tg_group_new(1, 5000, on_done, NULL);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v", port);
    assert_int_equal(tg_call_set(g, 0, url, strdup("{}"), 2, NULL, 5000), 0);
    run_threaded(g);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->kind, TG_TRANSPORT);
    assert_int_equal(r->http_status, 0);
    assert_null(r->body);
    assert_int_equal(r->sent, 0); /* refused: nothing left */
    tg_group_free(g);
}

static int alarm_fired[2], alarm_stopped[2];

static void on_alarm(void *arg, int stopped)
{
    int i = (int)(intptr_t)arg;
    alarm_fired[i]++;
    alarm_stopped[i] = stopped;
}

/* An alarm fires once after its delay on the loop; one still waiting when the loop stops is told
 * so (and freed: ASan); a stopped loop takes none. */
static void test_alarm(void **state)
{
    (void)state;
    memset(alarm_fired, 0, sizeof alarm_fired);
    assert_int_equal(tg_alarm(fx.loop, 50, on_alarm, (void *)(intptr_t)0), 0);
    assert_int_equal(tg_alarm(fx.loop, 60000, on_alarm, (void *)(intptr_t)1), 0);
    double t0 = proc_now_ms();
    while (alarm_fired[0] == 0 && proc_now_ms() - t0 < 5000)
        tg_loop_run_once(fx.loop, 100);
    assert_int_equal(alarm_fired[0], 1);
    assert_int_equal(alarm_stopped[0], 0);
    assert_true(proc_now_ms() - t0 >= 45);
    assert_int_equal(alarm_fired[1], 0);
    tg_loop_stop(fx.loop);
    assert_int_equal(alarm_fired[1], 1);
    assert_int_equal(alarm_stopped[1], 1);
    assert_int_equal(tg_alarm(fx.loop, 1, on_alarm, NULL), -ESHUTDOWN);
}

static void test_accepted_answer(void **state)
{
    (void)state;
    const char *q[] = {"delay_ms=10", "delay_ms=20"};
    tg_group *g = group_of(5000, 5000, 2, q);
    run_threaded(g);
    const char *names[] = {"address", "payment"};
    eg_answer a;
    assert_int_equal(eg_build(g, names, "ord-1", 3.0, &a), 0);
    assert_int_equal(a.http_status, 200);
    json_t *doc = json_loads(a.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "status")), "accepted");
    assert_string_equal(json_string_value(json_object_get(doc, "order_id")), "ord-1");
    json_t *results = json_object_get(doc, "results");
    assert_int_equal(json_object_size(results), 2);
    assert_true(json_is_true(json_object_get(json_object_get(results, "payment"), "ok")));
    assert_null(json_object_get(doc, "error_group"));
    json_decref(doc);
    free(a.body);
    tg_group_free(g);
}

static void test_error_messages(void **state)
{
    (void)state;
    char buf[128];
    tg_result r = {.state = TG_FAILED, .kind = TG_REJECTED, .http_status = 409};
    r.body = json_pack("{s:s, s:s}", "error", "out_of_stock", "sku", "SKU-9");
    eg_message("inventory", &r, buf, sizeof(buf));
    assert_string_equal(buf, "out of stock: SKU-9");
    json_decref(r.body);
    r.body = json_pack("{s:s}", "message", "card was declined");
    eg_message("payment", &r, buf, sizeof(buf));
    assert_string_equal(buf, "card was declined");
    json_decref(r.body);
    r.body = NULL;
    r.kind = TG_TIMEOUT;
    snprintf(r.message, sizeof(r.message), "did not answer within 1500 ms");
    eg_message("payment", &r, buf, sizeof(buf));
    assert_string_equal(buf, "payment did not answer within 1500 ms");
}

/* The contract's classification table, fed directly (no network). */
static void test_classification_table(void **state)
{
    (void)state;
    static const struct {
        int curl_code;
        long status;
        const char *body;
        int too_big;
        tg_state state;
        tg_kind kind;
    } rows[] = {
        {0, 200, "{\"ok\":true}", 0, TG_OK, TG_KIND_NONE},
        {0, 201, "{}", 0, TG_OK, TG_KIND_NONE},
        {0, 200, "[1]", 0, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 200, "not json", 0, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 200, "{\"a\":1,\"a\":2}", 0, TG_FAILED, TG_INVALID_RESPONSE}, /* ambiguous */
        {0, 204, "", 0, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 200, "{\"a\":1}", 1, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 301, "{}", 0, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 100, "", 0, TG_FAILED, TG_INVALID_RESPONSE},
        {0, 400, "", 0, TG_FAILED, TG_REJECTED},
        {0, 499, "{\"error\":\"x\"}", 0, TG_FAILED, TG_REJECTED},
        {0, 500, "oops", 0, TG_FAILED, TG_UPSTREAM_ERROR},
        {0, 599, "{}", 0, TG_FAILED, TG_UPSTREAM_ERROR},
        {7, 0, "", 0, TG_FAILED, TG_TRANSPORT},        /* CURLE_COULDNT_CONNECT */
        {56, 200, "{", 0, TG_FAILED, TG_TRANSPORT},    /* CURLE_RECV_ERROR: reset mid-answer */
        {28, 0, "", 0, TG_FAILED, TG_TIMEOUT},         /* CURLE_OPERATION_TIMEDOUT */
        {8, 0, "", 0, TG_FAILED, TG_INVALID_RESPONSE}, /* CURLE_WEIRD_SERVER_REPLY */
    };
    size_t n = sizeof(rows) / sizeof(rows[0]);
    tg_group *g = tg_group_new(n, 1000, on_done, NULL);
    unsigned expected_seq = 0;
    for (size_t i = 0; i < n; i++) {
        tg_call_record(g, i, rows[i].curl_code, rows[i].status, rows[i].body, strlen(rows[i].body),
                       rows[i].too_big, NULL);
        const tg_result *r = tg_group_result(g, i);
        if (r->state != rows[i].state || r->kind != rows[i].kind)
            fail_msg("row %zu: state %d kind %d, want %d %d", i, r->state, r->kind, rows[i].state,
                     rows[i].kind);
        /* a status line followed by a transfer error is not an answer: http_status null */
        long want_status = rows[i].curl_code == 0 || rows[i].too_big ? rows[i].status : 0;
        assert_int_equal(r->http_status, want_status);
        if (r->state == TG_FAILED)
            assert_int_equal(r->fail_seq, ++expected_seq);
        if (r->state == TG_FAILED)
            assert_true(strlen(r->message) > 0);
    }
    assert_int_equal(tg_group_failures(g), expected_seq);
    assert_true(json_is_true(json_object_get(tg_group_result(g, 0)->body, "ok")));
    assert_null(tg_group_result(g, 3)->body); /* not JSON: upstream null */
    tg_group_free(g);

    /* A NUL byte ends the text for jansson: "{}\0..." must not pass as {} (found by fuzzing). */
    static const char with_nul[] = "{}\0{\"x\":1}";
    g = tg_group_new(1, 1000, on_done, NULL);
    tg_call_record(g, 0, 0, 200, with_nul, sizeof(with_nul) - 1, 0, NULL);
    assert_int_equal(tg_group_result(g, 0)->kind, TG_INVALID_RESPONSE);
    assert_null(tg_group_result(g, 0)->body);
    tg_group_free(g);
}

/* Upstream bodies reach the answer as the bytes that came (numbers are not re-printed), and long
 * UTF-8 messages cut to fit stay valid: both found by fuzzing (fuzz/regressions/fuzz_upstream). */
static void test_answer_carries_upstream_bytes(void **state)
{
    (void)state;
    const char *ok_body = "{\"amount\":12345678.5,\"score\":0.12345678901234567,\"n\":1.50}";
    char long_code[600];
    size_t len = 0;
    memcpy(long_code, "{\"error\":\"", 10);
    len = 10;
    for (int i = 0; i < 250; i++, len += 2)
        memcpy(long_code + len, "\xc3\xa9", 2); /* é */
    memcpy(long_code + len, "\"}", 3);
    tg_group *g = tg_group_new(2, 1000, on_done, NULL);
    tg_call_record(g, 0, 0, 200, ok_body, strlen(ok_body), 0, NULL);
    tg_call_record(g, 1, 0, 409, long_code, strlen(long_code), 0, NULL);
    const char *names[] = {"payment", "inventory"};
    eg_answer a;
    assert_int_equal(eg_build(g, names, "ord-9", 1.25, &a), 0);
    assert_int_equal(a.http_status, 422);
    json_t *doc = json_loads(a.body, 0, NULL);
    assert_non_null(doc); /* valid JSON: the cut message is valid UTF-8 */
    assert_non_null(strstr(a.body, "\"upstream\":"));
    const char *msg = json_string_value(json_object_get(
        json_array_get(json_object_get(json_object_get(doc, "error_group"), "errors"), 0),
        "message"));
    assert_non_null(msg);
    assert_true(strlen(msg) > 100);
    json_decref(doc);
    free(a.body);
    tg_group_free(g);

    g = tg_group_new(1, 1000, on_done, NULL);
    tg_call_record(g, 0, 0, 200, ok_body, strlen(ok_body), 0, NULL);
    assert_int_equal(eg_build(g, names, "ord-9", 14.2, &a), 0);
    assert_non_null(strstr(a.body, ok_body)); /* byte for byte */
    assert_non_null(strstr(a.body, "\"elapsed_ms\":14.2}"));
    free(a.body);
    tg_group_free(g);
}

/* eg_build writes the 200 answer directly; it must be eg_build_tree's bytes, whatever the order
 * id, names, upstream bodies and time, and fall back where it cannot (then it is the same by
 * construction, which this checks too). */
static void assert_accepted_same(const char *const names[], const char *const bodies[], size_t n,
                                 const char *order_id, double ms)
{
    tg_group *g = tg_group_new(n, 1000, on_done, NULL);
    assert_non_null(g);
    for (size_t i = 0; i < n; i++)
        tg_call_record(g, i, 0, 200, bodies[i], strlen(bodies[i]), 0, NULL);
    eg_answer direct, tree;
    assert_int_equal(eg_build(g, names, order_id, ms, &direct), 0);
    assert_int_equal(eg_build_tree(g, names, order_id, ms, &tree), 0);
    assert_int_equal(direct.http_status, 200);
    assert_string_equal(direct.status, tree.status);
    assert_int_equal(direct.body_len, tree.body_len);
    assert_string_equal(direct.body, tree.body);
    free(direct.body);
    free(tree.body);
    tg_group_free(g);
}

static void test_accepted_answer_direct_matches_tree(void **state)
{
    (void)state;
    const char *names[] = {"address", "inventory", "payment"};
    const char *odd_names[] = {"a\"d\\r\n\x01", "caf\xc3\xa9", "/x"};
    const char *dup_names[] = {"a", "b", "a"};
    const char *bodies[] = {"{\"valid\":true}", " { \"in_stock\" : true , \"n\": 1.50 } ",
                            "{\"authorized\":true,\"id\":\"pay_\\u00e9\"}"};
    assert_accepted_same(names, bodies, 3, "ord-1001", 12.34);
    assert_accepted_same(names, bodies, 3, "o\"r\\d/\t\x7f\xc3\xa9", 0.04);
    assert_accepted_same(odd_names, bodies, 3, "ord", 14.0);
    assert_accepted_same(dup_names, bodies, 3, "ord", 1.25); /* fallback: duplicate name */
    assert_accepted_same(names, bodies, 3, "\xff", 1);       /* fallback: invalid UTF-8 */
    assert_accepted_same(names, bodies, 3, "ord", -2.5);     /* fallback: negative time */
    assert_accepted_same(names, bodies, 3, "ord", 1e15);     /* fallback: huge time */
    assert_accepted_same(names, bodies, 1, "ord", 99999.95);
    unsigned seed = 7;
    for (int round = 0; round < 500; round++) {
        char id[40];
        size_t len = (size_t)(rand_r(&seed) % 39);
        for (size_t i = 0; i < len; i++)
            id[i] = (char)(rand_r(&seed) % 127 + 1); /* ASCII: every escape */
        id[len] = '\0';
        assert_accepted_same(names, bodies, 3, id, rand_r(&seed) / 1e3);
    }
}

static void test_stop_cancels_running_groups(void **state)
{
    (void)state;
    const char *q[] = {"delay_ms=5000"};
    tg_group *g = group_of(20000, 10000, 1, q);
    assert_int_equal(tg_loop_start(fx.loop), 0);
    assert_int_equal(tg_submit(fx.loop, g), 0);
    double until = proc_now_ms() + 5000;
    while (stub_requests(fx.upstream) < 1 && proc_now_ms() < until)
        usleep(10 * 1000);
    int before = fx.done_calls;
    double t0 = proc_now_ms();
    tg_loop_stop(fx.loop);
    assert_true(proc_now_ms() - t0 < 2000);
    assert_int_equal(fx.done_calls, before + 1);
    assert_int_equal(tg_group_result(g, 0)->state, TG_CANCELLED);
    tg_group_free(g);
    tg_group *late = group_of(1000, 1000, 1, q);
    assert_int_equal(tg_submit(fx.loop, late), -ESHUTDOWN);
    tg_group_free(late);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_succeed_concurrently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_failure_cancels_the_rest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simultaneous_failures_all_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejection_and_5xx_is_422, setup, teardown),
        cmocka_unit_test_setup_teardown(test_call_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_non_json_2xx_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_3xx_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_5xx_is_upstream_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_over_limit_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused_is_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alarm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accepted_answer, setup, teardown),
        cmocka_unit_test(test_error_messages),
        cmocka_unit_test(test_classification_table),
        cmocka_unit_test(test_answer_carries_upstream_bytes),
        cmocka_unit_test(test_accepted_answer_direct_matches_tree),
        cmocka_unit_test_setup_teardown(test_stop_cancels_running_groups, setup, teardown),
    };
    return cmocka_run_group_tests_name("tg", tests, NULL, NULL);
}
