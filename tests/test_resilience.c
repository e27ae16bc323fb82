/* Resilience (contract v1.2) against real processes: checkoutd started with retry, breaker and
 * hedge policies, its upstreams the in-process stub (answers chosen per attempt by the URL's
 * query: upto_attempt=1 makes only the first attempt fail or hang) and the fault server (a mode
 * switched between requests). Every rule is checked from both sides: the client's answer and what
 * the upstream saw (X-Checkout-Attempt, X-Checkout-Timeout-Ms, Idempotency-Key, closed
 * connections, request counts) and /metrics. Time bounds are generous: the machine is shared. */
#include "support/fault.h"
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"
#include "support/stub.h"

#include <jansson.h>
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

static const char order[] =
    "{\"order_id\": \"ord-r1\", \"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, "
    "\"payment\": {\"token\": \"tok_visa\"}}";

typedef struct world {
    stub *addr, *pay;
    fault *flt;
    proc daemon;
    int port;
    char config_path[64];
} world;

static world W;

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    W.addr = stub_start();
    W.pay = stub_start();
    W.flt = fault_start(0);
    return W.addr != NULL && W.pay != NULL && W.flt != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&W.daemon);
    if (W.config_path[0])
        unlink(W.config_path);
    stub_stop(W.addr);
    stub_stop(W.pay);
    fault_stop(W.flt);
    return 0;
}

/* Starts checkoutd with deadline_ms, the address validation (its URL path+query at the address
 * stub, timeout 2000) and the payment validation (url in full, then its extra members). */
static void start(long deadline_ms, const char *addr_query, const char *pay_url,
                  const char *pay_extra)
{
    snprintf(W.config_path, sizeof W.config_path, "/tmp/checkoutd-resilience-%d.json",
             (int)getpid());
    FILE *f = fopen(W.config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": %ld, \"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": "
            "\"http://127.0.0.1:%d/a%s\", \"timeout_ms\": 2000},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"%s\"%s%s}]}\n",
            deadline_ms, stub_port(W.addr), addr_query, pay_url, pay_extra[0] ? ", " : "",
            pay_extra);
    fclose(f);
    W.port = proc_start_checkoutd(&W.daemon, W.config_path, NULL, NULL, "/dev/null");
    assert_true(W.port > 0);
}

static char *pay_stub_url(const char *query)
{
    static char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/p%s", stub_port(W.pay), query);
    return url;
}

static void checkout(http_reply *r, const char *idem)
{
    char url[64], h_idem[96];
    const char *headers[3] = {"Content-Type: application/json", NULL, NULL};
    if (idem != NULL) {
        snprintf(h_idem, sizeof h_idem, "Idempotency-Key: %s", idem);
        headers[1] = h_idem;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", W.port);
    http_request("POST", url, headers, order, strlen(order), 20000, r);
    assert_non_null(r->json);
}

static const json_t *first_error(const http_reply *r)
{
    return json_array_get(json_object_get(json_object_get(r->json, "error_group"), "errors"), 0);
}

static int in_list(const http_reply *r, const char *list, const char *name)
{
    const json_t *arr = json_object_get(r->json, list);
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(json_string_value(json_array_get(arr, i)), name) == 0)
            return 1;
    return 0;
}

static long header_long(stub *s, unsigned i, const char *name)
{
    char v[64];
    if (stub_header_of(s, i, name, v, sizeof v) != 0)
        fail_msg("request %u lacks %s", i, name);
    return atol(v);
}

static double metric(const char *series)
{
    char url[64];
    http_reply r;
    double v = -1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", W.port);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    char err[256];
    if (prom_check(r.body, err, sizeof err) != 0)
        fail_msg("metrics: %s", err);
    if (prom_value(r.body, series, &v) != 0)
        fail_msg("no series %s", series);
    http_reply_free(&r);
    return v;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* 503 then 200 is a 200; the upstream saw attempts 1 and 2 with the same Idempotency-Key and a
 * sane X-Checkout-Timeout-Ms on each. */
static void test_retry_then_success(void **state)
{
    (void)state;
    start(3000, "", pay_stub_url("?status=503&upto_attempt=1"),
          "\"timeout_ms\": 1500, \"retry\": {\"attempts\": 2, \"per_try_timeout_ms\": 600, "
          "\"backoff_ms\": 10}");
    http_reply r;
    checkout(&r, "k-retry-1");
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_int_equal(stub_recorded(W.pay), 2);
    for (unsigned i = 0; i < 2; i++) {
        char key[64];
        assert_int_equal(header_long(W.pay, i, "X-Checkout-Attempt"), (long)i + 1);
        assert_int_equal(stub_header_of(W.pay, i, "Idempotency-Key", key, sizeof key), 0);
        assert_string_equal(key, "k-retry-1");
        long t = header_long(W.pay, i, "X-Checkout-Timeout-Ms");
        assert_true(t >= 1 && t <= 600); /* the per-try window */
    }
    assert_int_equal(stub_recorded(W.addr), 1);
    assert_int_equal(header_long(W.addr, 0, "X-Checkout-Attempt"), 1);
    long t = header_long(W.addr, 0, "X-Checkout-Timeout-Ms");
    assert_true(t > 1000 && t <= 2000); /* its timeout_ms, the deadline (3000) is later */
    assert_true(metric("checkoutd_upstream_retries_total{validation=\"payment\"}") == 1);
    assert_true(
        metric("checkoutd_upstream_requests_total{validation=\"payment\",outcome=\"ok\"}") == 1);
    assert_true(metric("checkoutd_upstream_requests_total{validation=\"payment\",outcome="
                       "\"upstream_error\"}") == 1);
}

/* A 409 is never retried, whatever "on" says; a Retry-After that does not fit gives no retry. */
static void test_rejected_never_retried(void **state)
{
    (void)state;
    start(3000, "", pay_stub_url("?status=409"),
          "\"timeout_ms\": 1500, \"retry\": {\"attempts\": 5, \"per_try_timeout_ms\": 200, "
          "\"on\": [\"transport\", \"upstream_error\", \"timeout\", \"invalid_response\"]}");
    http_reply r;
    checkout(&r, NULL);
    assert_int_equal(r.status, 422);
    const json_t *e = first_error(&r);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "rejected");
    assert_int_equal(json_integer_value(json_object_get(e, "attempts")), 1);
    http_reply_free(&r);
    sleep_ms(300);
    assert_int_equal(stub_recorded(W.pay), 1);
}

static void test_retry_after_too_long_is_final(void **state)
{
    (void)state;
    start(3000, "", pay_stub_url("?status=503&retry_after=5"),
          "\"timeout_ms\": 1500, \"retry\": {\"attempts\": 3, \"per_try_timeout_ms\": 200}");
    http_reply r;
    double t0 = proc_now_ms();
    checkout(&r, NULL);
    assert_int_equal(r.status, 502);
    assert_true(proc_now_ms() - t0 < 1000); /* no 5 s wait: no retry at all */
    const json_t *e = first_error(&r);
    assert_int_equal(json_integer_value(json_object_get(e, "attempts")), 1);
    assert_int_equal(json_integer_value(json_object_get(e, "http_status")), 503);
    http_reply_free(&r);
    assert_int_equal(stub_recorded(W.pay), 1);
}

/* A retry waiting (Retry-After: 1) while the sibling fails is cancelled and never sent. */
static void test_waiting_retry_cancelled(void **state)
{
    (void)state;
    start(5000, "?status=500&delay_ms=200", pay_stub_url("?status=503&retry_after=1"),
          "\"timeout_ms\": 3000, \"retry\": {\"attempts\": 2, \"per_try_timeout_ms\": 500}");
    http_reply r;
    double t0 = proc_now_ms();
    checkout(&r, NULL);
    double took = proc_now_ms() - t0;
    assert_int_equal(r.status, 502);
    assert_true(took < 900); /* the answer did not wait for the retry's 1 s */
    assert_true(in_list(&r, "cancelled", "payment"));
    assert_string_equal(json_string_value(json_object_get(first_error(&r), "validation")),
                        "address");
    http_reply_free(&r);
    sleep_ms(1500);
    assert_int_equal(stub_recorded(W.pay), 1); /* the retry was never sent */
}

/* The breaker opens after N failures, then fails at once without a request (and without calling
 * the sibling), and a probe after open_ms closes it. */
static void test_breaker_opens_and_probe_closes(void **state)
{
    (void)state;
    char url[96];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/verify", fault_port(W.flt));
    start(3000, "", url,
          "\"timeout_ms\": 1000, \"retry\": {\"attempts\": 2, \"per_try_timeout_ms\": 400, "
          "\"backoff_ms\": 0}, \"breaker\": {\"consecutive_failures\": 3, \"open_ms\": 800}");
    fault_set_mode(W.flt, FAULT_RESET_MID_ANSWER);
    http_reply r;
    /* 2 failures (an attempt and its retry), then a third opens it: no retry while open */
    for (int i = 0; i < 2; i++) {
        checkout(&r, NULL);
        assert_int_equal(r.status, 502);
        assert_string_equal(json_string_value(json_object_get(first_error(&r), "kind")),
                            "transport");
        assert_int_equal(json_integer_value(json_object_get(first_error(&r), "attempts")), 2 - i);
        http_reply_free(&r);
    }
    assert_int_equal(fault_requests(W.flt), 3);
    assert_true(metric("checkoutd_upstream_requests_total{validation=\"payment\",outcome="
                       "\"transport\"}") == 3);
    assert_true(metric("checkoutd_circuit_rejections_total{validation=\"payment\"}") == 1);
    assert_true(metric("checkoutd_circuit_state{validation=\"payment\",state=\"open\"}") == 1);
    unsigned addr_before = stub_recorded(W.addr);
    double t0 = proc_now_ms();
    checkout(&r, NULL);
    assert_true(proc_now_ms() - t0 < 500);
    assert_int_equal(r.status, 502);
    const json_t *e = first_error(&r);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "circuit_open");
    assert_true(json_is_null(json_object_get(e, "http_status")));
    assert_true(json_is_null(json_object_get(e, "upstream")));
    assert_int_equal(json_integer_value(json_object_get(e, "attempts")), 0);
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "payment"));
    assert_true(in_list(&r, "cancelled", "address"));
    http_reply_free(&r);
    assert_int_equal(fault_requests(W.flt), 3);           /* no upstream request */
    assert_int_equal(stub_recorded(W.addr), addr_before); /* the sibling was not called */
    assert_true(metric("checkoutd_circuit_rejections_total{validation=\"payment\"}") == 2);
    /* half-open after open_ms: the probe succeeds and closes it */
    sleep_ms(900);
    fault_set_mode(W.flt, FAULT_OK);
    assert_true(metric("checkoutd_circuit_state{validation=\"payment\",state=\"half_open\"}") == 1);
    checkout(&r, NULL);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_true(metric("checkoutd_circuit_state{validation=\"payment\",state=\"closed\"}") == 1);
    checkout(&r, NULL);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
}

/* A hedge wins over a hung first attempt; the loser's connection is closed. */
static void test_hedge_wins(void **state)
{
    (void)state;
    start(5000, "", pay_stub_url("?delay_ms=10000&upto_attempt=1"),
          "\"timeout_ms\": 3000, \"idempotent\": true, \"hedge\": {\"after_ms\": 100}");
    http_reply r;
    double t0 = proc_now_ms();
    checkout(&r, "k-hedge");
    double took = proc_now_ms() - t0;
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_true(took >= 90 && took < 2500);
    assert_int_equal(stub_wait_closed_early(W.pay, 1, 5000), 0); /* the loser, aborted */
    assert_int_equal(stub_recorded(W.pay), 2);
    char key[64];
    for (unsigned i = 0; i < 2; i++) {
        assert_int_equal(stub_header_of(W.pay, i, "Idempotency-Key", key, sizeof key), 0);
        assert_string_equal(key, "k-hedge");
    }
    long a0 = header_long(W.pay, 0, "X-Checkout-Attempt");
    long a1 = header_long(W.pay, 1, "X-Checkout-Attempt");
    assert_true((a0 == 1 && a1 == 2) || (a0 == 2 && a1 == 1));
    assert_true(metric("checkoutd_upstream_hedges_total{validation=\"payment\",result=\"won\"}") ==
                1);
}

/* Without any policy every request still carries both headers; the deadline bounds the timeout. */
static void test_headers_without_policy(void **state)
{
    (void)state;
    start(500, "", pay_stub_url(""), "\"timeout_ms\": 300");
    http_reply r;
    checkout(&r, NULL);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_int_equal(header_long(W.pay, 0, "X-Checkout-Attempt"), 1);
    long t = header_long(W.pay, 0, "X-Checkout-Timeout-Ms");
    assert_true(t > 100 && t <= 300);
    t = header_long(W.addr, 0, "X-Checkout-Timeout-Ms");
    assert_true(t > 100 && t <= 500); /* timeout_ms 2000, the deadline 500 comes first */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retry_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejected_never_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_too_long_is_final, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiting_retry_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_opens_and_probe_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hedge_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_without_policy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
