/* Compensation (contract v1.2) against real processes: checkoutd with compensate blocks, its
 * upstreams fake-upstreams (inventory POST /release and payment POST /void count undo requests
 * per order in /_fake/stats; POST /_fake/undo?fail=N&status=S&delay_ms=D makes them fail or wait)
 * and, for the cases fake-upstreams cannot play, the fault server. Every rule is checked from both
 * sides: the client's answer ("compensating") and what the undo endpoint received, plus /metrics,
 * the log lines and the exit of a drained process. Time bounds are generous: the machine is
 * shared. */
#include "support/fault.h"
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"
#include "support/stub.h"

#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define ADDR_OK   "\"address\": {\"name\": \"A\", \"postal_code\": \"1\", \"country\": \"US\"}"
#define ITEMS_OK  "\"items\": [{\"sku\": \"SKU-1\", \"quantity\": 1}]"
#define ITEMS_OOS "\"items\": [{\"sku\": \"OOS-9\", \"quantity\": 1}]"
#define PAY(tok)  "\"payment\": {\"token\": \"" tok "\", \"amount\": 5, \"currency\": \"USD\"}"

typedef struct world {
    proc fu, daemon;
    fault *flt;
    stub *slow_refusal; /* inventory's url when set: a 409 after a delay */
    int ports[3];       /* address, inventory, payment */
    int port;
    char config_path[64], log_path[64];
} world;

static world W;

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    snprintf(W.config_path, sizeof W.config_path, "/tmp/checkoutd-comp-%d.json", (int)getpid());
    snprintf(W.log_path, sizeof W.log_path, "/tmp/checkoutd-comp-%d.log", (int)getpid());
    unlink(W.log_path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&W.daemon);
    proc_stop(&W.fu);
    fault_stop(W.flt);
    stub_stop(W.slow_refusal);
    unlink(W.config_path);
    unlink(W.log_path);
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* fake-upstreams with every answer after latency_ms. */
static void start_upstreams(const char *latency_ms)
{
    char *extra[] = {"--latency-ms", (char *)latency_ms, NULL};
    assert_int_equal(proc_start_upstreams(&W.fu, extra, "/dev/null", W.ports), 0);
}

/* checkoutd with the three validations at fake-upstreams; inv_comp and pay_comp are the
 * compensate blocks' members ("" for none); pay_url NULL: fake-upstreams' payment; pay_extra:
 * more members of payment. */
static void start_checkoutd(long deadline_ms, const char *inv_comp, const char *pay_url,
                            const char *pay_extra, const char *pay_comp, char *const env[])
{
    char url[128], inv[512], pay[512], inv_url[128];
    if (W.slow_refusal != NULL)
        snprintf(inv_url, sizeof inv_url, "http://127.0.0.1:%d/check?status=409&delay_ms=300",
                 stub_port(W.slow_refusal));
    else
        snprintf(inv_url, sizeof inv_url, "http://127.0.0.1:%d/check", W.ports[1]);
    if (pay_url == NULL) {
        snprintf(url, sizeof url, "http://127.0.0.1:%d/verify", W.ports[2]);
        pay_url = url;
    }
    inv[0] = pay[0] = '\0';
    if (inv_comp[0])
        snprintf(inv, sizeof inv, ", \"compensate\": {%s}", inv_comp);
    if (pay_comp[0])
        snprintf(pay, sizeof pay, ", \"compensate\": {%s}", pay_comp);
    FILE *f = fopen(W.config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": %ld, \"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": "
            "\"http://127.0.0.1:%d/validate\", \"timeout_ms\": 3000},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": "
            "\"%s\", \"timeout_ms\": 3000%s},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"%s\"%s%s}]}\n",
            deadline_ms, W.ports[0], inv_url, inv, pay_url, pay_extra, pay);
    fclose(f);
    W.port = proc_start_checkoutd(&W.daemon, W.config_path, NULL, env, W.log_path);
    assert_true(W.port > 0);
}

/* The usual blocks: inventory's /release, payment's /void, fast retries. */
static const char *inv_release(void)
{
    static char b[160];
    snprintf(b, sizeof b, "\"url\": \"http://127.0.0.1:%d/release\", \"backoff_ms\": 20",
             W.ports[1]);
    return b;
}

static const char *pay_void(const char *more)
{
    static char b[256];
    snprintf(b, sizeof b, "\"url\": \"http://127.0.0.1:%d/void\", \"backoff_ms\": 20%s%s",
             W.ports[2], more[0] ? ", " : "", more);
    return b;
}

static void checkout_h(http_reply *r, const char *order_id, const char *members,
                       const char *const extra[], long timeout_ms)
{
    char url[64], body[1024];
    const char *headers[6] = {"Content-Type: application/json", NULL};
    for (size_t i = 0; extra != NULL && extra[i] != NULL && i < 4; i++)
        headers[i + 1] = extra[i];
    snprintf(body, sizeof body, "{\"order_id\": \"%s\", %s}", order_id, members);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", W.port);
    http_request("POST", url, headers, body, strlen(body), timeout_ms, r);
}

static void checkout(http_reply *r, const char *order_id, const char *members)
{
    checkout_h(r, order_id, members, NULL, 20000);
    assert_non_null(r->json);
}

/* 1 when name is in the answer's list. */
static int in_list(const http_reply *r, const char *list, const char *name)
{
    const json_t *arr = json_object_get(r->json, list);
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(json_string_value(json_array_get(arr, i)), name) == 0)
            return 1;
    return 0;
}

static size_t list_size(const http_reply *r, const char *list)
{
    const json_t *arr = json_object_get(r->json, list);
    assert_true(json_is_array(arr));
    return json_array_size(arr);
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

static void fake_post(int port, const char *path)
{
    char url[128];
    http_reply r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    assert_int_equal(http_request("POST", url, NULL, "", 0, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
}

/* The undo requests role (port) received for order, and how many it answered 200. */
static long undo_count(int port, const char *what, const char *order)
{
    json_t *st = fake_get(port, "/_fake/stats");
    long n = (long)json_integer_value(json_object_get(json_object_get(st, what), order));
    json_decref(st);
    return n;
}

/* Polls until the role has undone order n times: 0, or -1 after timeout_ms. */
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

/* Polls a metric until it equals want: 0, or -1. */
static int wait_metric(const char *series, double want, int timeout_ms)
{
    double end = proc_now_ms() + timeout_ms;
    while (proc_now_ms() < end) {
        if (metric(series) == want)
            return 0;
        sleep_ms(20);
    }
    return -1;
}

/* The log's text so far (malloc'd). */
static char *log_text(void)
{
    FILE *f = fopen(W.log_path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The first log line with event and (when not NULL) containing needle, parsed; NULL if none. */
static json_t *log_event(const char *event, const char *needle)
{
    char *text = log_text(), *save = NULL, want[96];
    json_t *found = NULL;
    snprintf(want, sizeof want, "\"event\":\"%s\"", event);
    for (char *line = strtok_r(text, "\n", &save); line && !found;
         line = strtok_r(NULL, "\n", &save))
        if (strstr(line, want) && (needle == NULL || strstr(line, needle)))
            found = json_loads(line, 0, NULL);
    free(text);
    return found;
}

/* ---- which validations are compensated ---------------------------------------------------- */

/* Payment authorised, then inventory out of stock (a 409 after 300 ms, so that payment surely
 * answered first): a 422 compensating payment; the void carries the order, the validation, the
 * request's field unchanged and payment's success body; its headers are X-Request-Id (the
 * checkout's), Idempotency-Key <key>:compensate:payment (the quoted form's quotes dropped) and
 * X-Checkout-Attempt 1. */
static void test_payment_voided_when_inventory_refuses(void **state)
{
    (void)state;
    start_upstreams("0");
    W.slow_refusal = stub_start();
    assert_non_null(W.slow_refusal);
    start_checkoutd(3000, inv_release(), NULL, ", \"timeout_ms\": 3000", pay_void(""), NULL);
    http_reply r;
    const char *hdrs[] = {"Idempotency-Key: \"k-void-1\"", "X-Request-Id: rid-void-1",
                          "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                          NULL};
    checkout_h(&r, "ord-v1", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"), hdrs, 20000);
    assert_non_null(r.json);
    assert_int_equal(r.status, 422);
    assert_int_equal(list_size(&r, "compensating"), 1);
    assert_true(in_list(&r, "completed", "payment"));
    assert_true(in_list(&r, "compensating", "payment"));
    assert_false(in_list(&r, "compensating", "inventory")); /* it refused: nothing took effect */
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-v1", 1, 10000), 0);
    assert_int_equal(undo_count(W.ports[1], "undo_requests", "ord-v1"), 0);

    json_t *last = fake_get(W.ports[2], "/_fake/last");
    assert_string_equal(json_string_value(json_object_get(last, "path")), "/void");
    json_t *h = json_object_get(last, "headers"), *b = json_object_get(last, "body");
    assert_string_equal(json_string_value(json_object_get(h, "idempotency-key")),
                        "k-void-1:compensate:payment");
    assert_string_equal(json_string_value(json_object_get(h, "x-request-id")), "rid-void-1");
    assert_string_equal(json_string_value(json_object_get(h, "x-checkout-attempt")), "1");
    assert_string_equal(json_string_value(json_object_get(h, "traceparent")),
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")), "application/json");
    assert_string_equal(json_string_value(json_object_get(b, "order_id")), "ord-v1");
    assert_string_equal(json_string_value(json_object_get(b, "validation")), "payment");
    json_t *want =
        json_loads("{\"token\": \"tok_visa\", \"amount\": 5, \"currency\": \"USD\"}", 0, NULL);
    assert_true(json_equal(json_object_get(b, "payment"), want));
    json_decref(want);
    assert_true(json_is_true(json_object_get(json_object_get(b, "result"), "authorized")));
    json_decref(last);

    assert_int_equal(
        wait_metric("checkoutd_compensations_total{validation=\"payment\",outcome=\"done\"}", 1,
                    5000),
        0);
    assert_true(metric("checkoutd_compensation_requests_total{validation=\"payment\",outcome="
                       "\"ok\"}") == 1);
    assert_true(metric("checkoutd_compensations_pending") == 0);
    json_t *started = log_event("compensation_started", "ord-v1");
    json_t *done = log_event("compensation_done", "ord-v1");
    assert_non_null(started);
    assert_non_null(done);
    assert_string_equal(json_string_value(json_object_get(started, "request_id")), "rid-void-1");
    assert_true(json_is_false(json_object_get(started, "cancelled"))); /* result is payment's */
    assert_string_equal(json_string_value(json_object_get(done, "validation")), "payment");
    assert_int_equal(json_integer_value(json_object_get(done, "attempts")), 1);
    json_decref(started);
    json_decref(done);
}

/* A 200 compensates nothing; without an Idempotency-Key the undo key is the request id. A
 * declined card (rejected) and a 500 (upstream_error) are not compensated, the reservation that
 * succeeded beside them is. */
static void test_success_and_refusals(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, inv_release(), NULL, ", \"timeout_ms\": 3000", pay_void(""), NULL);
    http_reply r;
    checkout(&r, "ord-ok", ADDR_OK ", " ITEMS_OK ", " PAY("tok_visa"));
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "compensating"));
    http_reply_free(&r);

    const char *hdrs[] = {"X-Request-Id: rid-dec", NULL};
    checkout_h(&r, "ord-dec", ADDR_OK ", " ITEMS_OK ", " PAY("tok_declined"), hdrs, 20000);
    assert_int_equal(r.status, 422);
    assert_int_equal(list_size(&r, "compensating"), 1);
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[1], "ord-dec", 1, 10000), 0);
    json_t *last = fake_get(W.ports[1], "/_fake/last");
    assert_string_equal(json_string_value(json_object_get(last, "path")), "/release");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(last, "headers"), "idempotency-key")),
        "rid-dec:compensate:inventory");
    assert_true(json_is_array(json_object_get(json_object_get(last, "body"), "items")));
    json_decref(last);

    checkout(&r, "ord-err", ADDR_OK ", " ITEMS_OK ", " PAY("tok_error"));
    assert_int_equal(r.status, 502);
    assert_false(in_list(&r, "compensating", "payment"));
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[1], "ord-err", 1, 10000), 0);
    sleep_ms(200);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-ok"), 0);
    assert_int_equal(undo_count(W.ports[1], "undo_requests", "ord-ok"), 0);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-dec"), 0);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-err"), 0);
}

/* Unknown outcomes are compensated: a 2xx that is not JSON (invalid_response, result null) and a
 * timeout; so is a validation cancelled after its request was sent (tok_slow was sent: every
 * upstream answers after 100 ms, so the out-of-stock answer comes well after it left). */
static void test_unknown_outcomes_and_cancelled_after_sending(void **state)
{
    (void)state;
    start_upstreams("100");
    start_checkoutd(5000, inv_release(), NULL, ", \"timeout_ms\": 600", pay_void(""), NULL);
    http_reply r;
    checkout(&r, "ord-garb", ADDR_OK ", " ITEMS_OK ", " PAY("tok_garbage"));
    assert_int_equal(r.status, 502);
    assert_true(in_list(&r, "compensating", "payment"));
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-garb", 1, 10000), 0);
    json_t *last = fake_get(W.ports[2], "/_fake/last");
    assert_true(json_is_null(json_object_get(json_object_get(last, "body"), "result")));
    json_decref(last);

    checkout(&r, "ord-slow", ADDR_OK ", " ITEMS_OK ", " PAY("tok_slow"));
    assert_int_equal(r.status, 504); /* payment's timeout_ms 600 */
    assert_true(in_list(&r, "compensating", "payment"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-slow", 1, 10000), 0);

    checkout(&r, "ord-canc", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_slow"));
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "cancelled", "payment"));
    assert_true(in_list(&r, "compensating", "payment"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-canc", 1, 10000), 0);
}

/* Nothing sent, nothing undone: a refused connection (transport before sending), a call
 * cancelled while its TLS handshake hangs (the fault server never answers the ClientHello: no
 * request left), and the same handshake timing out. A reset after the request was sent
 * (transport after sending) is compensated. */
static void test_not_sent_not_compensated(void **state)
{
    (void)state;
    start_upstreams("0");
    int closed = http_free_port();
    char url[128], comp[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/verify", closed);
    snprintf(comp, sizeof comp, "\"url\": \"http://127.0.0.1:%d/void\"", closed);
    start_checkoutd(3000, inv_release(), url, ", \"timeout_ms\": 3000", comp, NULL);
    http_reply r;
    checkout(&r, "ord-refused", ADDR_OK ", " ITEMS_OK ", " PAY("tok_visa"));
    assert_int_equal(r.status, 502);
    assert_string_equal(
        json_string_value(json_object_get(
            json_array_get(json_object_get(json_object_get(r.json, "error_group"), "errors"), 0),
            "kind")),
        "transport");
    assert_false(in_list(&r, "compensating", "payment"));
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    proc_stop(&W.daemon);

    W.flt = fault_start(0);
    assert_non_null(W.flt);
    snprintf(url, sizeof url, "https://127.0.0.1:%d/never_answers", fault_port(W.flt));
    snprintf(comp, sizeof comp, "\"url\": \"https://127.0.0.1:%d/never_answers\"",
             fault_port(W.flt));
    start_checkoutd(3000, inv_release(), url, ", \"timeout_ms\": 3000", comp, NULL);
    checkout(&r, "ord-tls", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "cancelled", "payment"));
    assert_int_equal(list_size(&r, "compensating"), 0);
    http_reply_free(&r);
    proc_stop(&W.daemon);

    /* the same hanging handshake, now timing out: a timeout that sent nothing undoes nothing */
    start_checkoutd(3000, inv_release(), url, ", \"timeout_ms\": 300", comp, NULL);
    checkout(&r, "ord-tls-timeout", ADDR_OK ", " ITEMS_OK ", " PAY("tok_visa"));
    assert_int_equal(r.status, 504);
    assert_false(in_list(&r, "compensating", "payment"));
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[1], "ord-tls-timeout", 1, 10000), 0);
    proc_stop(&W.daemon);

    snprintf(url, sizeof url, "http://127.0.0.1:%d/reset_mid_answer", fault_port(W.flt));
    snprintf(comp, sizeof comp, "\"url\": \"http://127.0.0.1:%d/void\"", W.ports[2]);
    start_checkoutd(3000, "", url, ", \"timeout_ms\": 3000", comp, NULL);
    checkout(&r, "ord-reset", ADDR_OK ", " ITEMS_OK ", " PAY("tok_visa"));
    assert_int_equal(r.status, 502);
    assert_true(in_list(&r, "compensating", "payment"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-reset", 1, 10000), 0);
    assert_true(metric("checkoutd_compensation_requests_total{validation=\"payment\",outcome="
                       "\"ok\"}") == 1);
}

/* ---- the undo request's answers ------------------------------------------------------------ */

/* Two 503s then a 200: three requests, X-Checkout-Attempt 3 on the last, the validation's
 * configured header on it, done. Then every request fails: given up after attempts (3),
 * compensation_failed names order, validation and the last outcome, and never a header value. */
static void test_retries_and_giving_up(void **state)
{
    (void)state;
    start_upstreams("0");
    char *env[] = {"PAY_SECRET=sk-never-in-the-log", NULL};
    start_checkoutd(
        3000, "", NULL,
        ", \"timeout_ms\": 3000, \"headers\": {\"Authorization\": \"Bearer ${PAY_SECRET}\"}",
        pay_void("\"attempts\": 3"), env);
    fake_post(W.ports[2], "/_fake/undo?fail=2");
    http_reply r;
    checkout(&r, "ord-retry", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-retry", 1, 10000), 0);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-retry"), 3);
    json_t *last = fake_get(W.ports[2], "/_fake/last");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(last, "headers"), "x-checkout-attempt")),
        "3");
    const char *key =
        json_string_value(json_object_get(json_object_get(last, "headers"), "idempotency-key"));
    assert_non_null(key); /* the request id's, the same on every attempt */
    assert_true(strlen(key) > 19 && strcmp(key + strlen(key) - 19, ":compensate:payment") == 0);
    /* the validation's configured headers apply to its undo step too */
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(last, "headers"), "authorization")),
        "Bearer sk-never-in-the-log");
    json_decref(last);
    assert_true(metric("checkoutd_compensation_requests_total{validation=\"payment\",outcome="
                       "\"upstream_error\"}") == 2);

    fake_post(W.ports[2], "/_fake/undo?fail=100");
    checkout(&r, "ord-giveup", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "compensating", "payment"));
    http_reply_free(&r);
    assert_int_equal(
        wait_metric("checkoutd_compensations_total{validation=\"payment\",outcome=\"given_up\"}", 1,
                    10000),
        0);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-giveup"), 3);
    json_t *failed = log_event("compensation_failed", "ord-giveup");
    assert_non_null(failed);
    assert_string_equal(json_string_value(json_object_get(failed, "validation")), "payment");
    assert_string_equal(json_string_value(json_object_get(failed, "last_outcome")),
                        "upstream_error");
    assert_int_equal(json_integer_value(json_object_get(failed, "attempts")), 3);
    assert_int_equal(json_integer_value(json_object_get(failed, "http_status")), 503);
    json_decref(failed);
    char *text = log_text();
    assert_null(strstr(text, "sk-never-in-the-log")); /* never a header value */
    free(text);
    assert_true(metric("checkoutd_compensations_pending") == 0);
}

/* 404, 409 and 410 mean "nothing to undo" or "already undone": done after one request. A 400 is
 * retried like any other failure. */
static void test_404_409_410_are_done(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, "", NULL, ", \"timeout_ms\": 3000", pay_void("\"attempts\": 2"), NULL);
    static const char *const statuses[] = {"404", "409", "410"};
    for (size_t i = 0; i < 3; i++) {
        char path[64], order[32];
        snprintf(path, sizeof path, "/_fake/undo?fail=1&status=%s", statuses[i]);
        snprintf(order, sizeof order, "ord-%s", statuses[i]);
        fake_post(W.ports[2], path);
        http_reply r;
        checkout(&r, order, ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
        assert_int_equal(r.status, 422);
        http_reply_free(&r);
        assert_int_equal(
            wait_metric("checkoutd_compensations_total{validation=\"payment\",outcome=\"done\"}",
                        (double)i + 1, 10000),
            0);
        assert_int_equal(undo_count(W.ports[2], "undo_requests", order), 1);
        assert_int_equal(undo_count(W.ports[2], "undone", order), 0);
    }
    fake_post(W.ports[2], "/_fake/undo?fail=1&status=400");
    http_reply r;
    checkout(&r, "ord-400", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[2], "ord-400", 1, 10000), 0);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-400"), 2);
}

/* ---- never in the client's way ------------------------------------------------------------- */

/* An undo endpoint that takes 2 s does not delay the answer; the gauge shows it pending. */
static void test_answer_not_delayed(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, "", NULL, ", \"timeout_ms\": 3000", pay_void("\"timeout_ms\": 5000"),
                    NULL);
    fake_post(W.ports[2], "/_fake/undo?delay_ms=2000");
    http_reply r;
    checkout(&r, "ord-fast", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "compensating", "payment"));
    assert_true(r.elapsed_ms < 1000);
    http_reply_free(&r);
    assert_true(metric("checkoutd_compensations_pending") == 1); /* the void still waits */
    assert_int_equal(wait_undone(W.ports[2], "ord-fast", 1, 10000), 0);
    assert_int_equal(wait_metric("checkoutd_compensations_pending", 0, 5000), 0);
}

/* A client that hangs up before its answer: the checkout runs to its deadline (payment slow), and
 * what took effect (inventory, and payment which timed out) is compensated all the same. */
static void test_client_hangs_up(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(800, inv_release(), NULL, ", \"timeout_ms\": 3000", pay_void(""), NULL);
    http_reply r;
    checkout_h(&r, "ord-gone", ADDR_OK ", " ITEMS_OK ", " PAY("tok_slow"), NULL, 200);
    assert_int_equal(r.status, 0); /* we hung up */
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[1], "ord-gone", 1, 10000), 0);
    assert_int_equal(wait_undone(W.ports[2], "ord-gone", 1, 10000), 0);
}

/* ---- drain ---------------------------------------------------------------------------------- */

/* SIGTERM while an undo request takes 1.5 s: it finishes, then the process exits 0, and the stop
 * line counts it done. */
static void test_sigterm_lets_compensation_finish(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, "", NULL, ", \"timeout_ms\": 3000", pay_void("\"timeout_ms\": 5000"),
                    NULL);
    fake_post(W.ports[2], "/_fake/undo?delay_ms=1500");
    http_reply r;
    checkout(&r, "ord-term", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    http_reply_free(&r);
    assert_int_equal(proc_signal(&W.daemon, SIGTERM), 0);
    int status = -1;
    assert_int_equal(proc_wait_exit(&W.daemon, 20000, &status), 0);
    assert_int_equal(status, 0);
    assert_int_equal(undo_count(W.ports[2], "undone", "ord-term"), 1);
    json_t *stop = log_event("stop", NULL);
    assert_non_null(stop);
    assert_int_equal(json_integer_value(json_object_get(stop, "compensations_done")), 1);
    assert_int_equal(json_integer_value(json_object_get(stop, "compensations_given_up")), 0);
    json_decref(stop);
}

/* The drain's bound passes with a compensation still waiting (its undo takes 10 s; the bound is
 * shortened to 300 ms for the test): it is given up, logged, counted in the stop line, and the
 * process exits 0 without a leak (under ASan, LeakSanitizer would make the exit status non-zero).
 */
static void test_drain_bound_gives_up(void **state)
{
    (void)state;
    start_upstreams("0");
    char *env[] = {"CHECKOUTD_COMPENSATION_DRAIN_MS=300", NULL};
    start_checkoutd(3000, "", NULL, ", \"timeout_ms\": 3000", pay_void("\"timeout_ms\": 20000"),
                    env);
    fake_post(W.ports[2], "/_fake/undo?delay_ms=10000");
    http_reply r;
    checkout(&r, "ord-lost", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"));
    assert_int_equal(r.status, 422);
    http_reply_free(&r);
    sleep_ms(100);
    double t0 = proc_now_ms();
    assert_int_equal(proc_signal(&W.daemon, SIGTERM), 0);
    int status = -1;
    assert_int_equal(proc_wait_exit(&W.daemon, 20000, &status), 0);
    assert_int_equal(status, 0);
    assert_true(proc_now_ms() - t0 < 8000);
    json_t *stop = log_event("stop", NULL);
    assert_non_null(stop);
    assert_int_equal(json_integer_value(json_object_get(stop, "compensations_done")), 0);
    assert_int_equal(json_integer_value(json_object_get(stop, "compensations_given_up")), 1);
    json_decref(stop);
    json_t *failed = log_event("compensation_failed", "ord-lost");
    assert_non_null(failed);
    assert_string_equal(json_string_value(json_object_get(failed, "last_outcome")), "cancelled");
    json_decref(failed);
}

/* ---- idempotency ------------------------------------------------------------------------------
 */

/* A replay compensates nothing again: the stored 422 carries its compensating list, byte for byte,
 * and the payment service sees no second void. A 502 whose checkout started a compensation
 * (tok_garbage: invalid_response, undone) is stored like a 422 and replayed, with no upstream call;
 * a 502 that compensated nothing (tok_error) is released: the same key runs again. */
static void test_replay_compensates_nothing(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, "", NULL, ", \"timeout_ms\": 3000", pay_void(""), NULL);
    const char *k1[] = {"Idempotency-Key: k-replay-1", NULL};
    http_reply r, again;
    checkout_h(&r, "ord-rep", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"), k1, 20000);
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "compensating", "payment"));
    assert_int_equal(wait_undone(W.ports[2], "ord-rep", 1, 10000), 0);
    checkout_h(&again, "ord-rep", ADDR_OK ", " ITEMS_OOS ", " PAY("tok_visa"), k1, 20000);
    assert_int_equal(again.status, 422);
    assert_non_null(http_reply_header(&again, "Idempotent-Replayed"));
    assert_string_equal(again.body, r.body);
    http_reply_free(&r);
    http_reply_free(&again);
    sleep_ms(300);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-rep"), 1);

    const char *k2[] = {"Idempotency-Key: k-replay-502", NULL};
    checkout_h(&r, "ord-502", ADDR_OK ", " ITEMS_OK ", " PAY("tok_garbage"), k2, 20000);
    assert_int_equal(r.status, 502);
    assert_true(in_list(&r, "compensating", "payment"));
    assert_int_equal(wait_undone(W.ports[2], "ord-502", 1, 10000), 0);
    json_t *st = fake_get(W.ports[2], "/_fake/stats");
    json_int_t before = json_integer_value(json_object_get(st, "requests"));
    json_decref(st);
    checkout_h(&again, "ord-502", ADDR_OK ", " ITEMS_OK ", " PAY("tok_garbage"), k2, 20000);
    assert_int_equal(again.status, 502);
    assert_non_null(http_reply_header(&again, "Idempotent-Replayed"));
    assert_string_equal(again.body, r.body);
    http_reply_free(&r);
    http_reply_free(&again);
    sleep_ms(300);
    st = fake_get(W.ports[2], "/_fake/stats");
    assert_int_equal(json_integer_value(json_object_get(st, "requests")), before); /* no call */
    json_decref(st);
    assert_int_equal(undo_count(W.ports[2], "undo_requests", "ord-502"), 1);

    const char *k3[] = {"Idempotency-Key: k-rerun-502", NULL};
    checkout_h(&r, "ord-rerun", ADDR_OK ", " ITEMS_OK ", " PAY("tok_error"), k3, 20000);
    assert_int_equal(r.status, 502);
    assert_int_equal(list_size(&r, "compensating"), 0);
    http_reply_free(&r);
    checkout_h(&again, "ord-rerun", ADDR_OK ", " ITEMS_OK ", " PAY("tok_error"), k3, 20000);
    assert_int_equal(again.status, 502);
    assert_null(http_reply_header(&again, "Idempotent-Replayed")); /* it ran again */
    http_reply_free(&again);
}

/* A declined card (inventory reserved, then compensated) with the extra headers; returns the undo
 * /release's Idempotency-Key as inventory received it (malloc'd). */
static char *undo_key_of(const char *order, const char *const hdrs[])
{
    http_reply r;
    checkout_h(&r, order, ADDR_OK ", " ITEMS_OK ", " PAY("tok_declined"), hdrs, 20000);
    assert_int_equal(r.status, 422);
    assert_true(in_list(&r, "compensating", "inventory"));
    http_reply_free(&r);
    assert_int_equal(wait_undone(W.ports[1], order, 1, 10000), 0);
    json_t *last = fake_get(W.ports[1], "/_fake/last");
    assert_string_equal(json_string_value(json_object_get(last, "path")), "/release");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(last, "body"), "order_id")), order);
    const char *k =
        json_string_value(json_object_get(json_object_get(last, "headers"), "idempotency-key"));
    assert_non_null(k);
    char *copy = strdup(k);
    json_decref(last);
    return copy;
}

/* Issue #21: the undo's key is built from the key the store uses (idem_parse_key), in every store
 * mode: "a\\b" (quoted form, escaped backslash) and a\b are one key, and so one undo key. With
 * "store": "off" a header that is no key (here 600 characters: it overflowed the key buffer, and
 * the undo went out as "Idempotency-Key: " with no value) gets the request id, as when there is
 * none. */
static void test_undo_key_is_the_stores_key(void **state)
{
    (void)state;
    start_upstreams("0");
    start_checkoutd(3000, inv_release(), NULL, ", \"timeout_ms\": 3000", pay_void(""), NULL);
    const char *quoted[] = {"Idempotency-Key: \"a\\\\b\"", NULL};
    char *k = undo_key_of("ord-key-1", quoted); /* the memory store: the header is a key */
    assert_string_equal(k, "a\\b:compensate:inventory");
    free(k);

    proc_stop(&W.daemon);
    char *off[] = {"CHECKOUTD_IDEMPOTENCY_STORE=off", NULL};
    start_checkoutd(3000, inv_release(), NULL, ", \"timeout_ms\": 3000", pay_void(""), off);
    k = undo_key_of("ord-key-2", quoted);
    assert_string_equal(k, "a\\b:compensate:inventory");
    free(k);
    const char *plain[] = {"Idempotency-Key: a\\b", NULL};
    k = undo_key_of("ord-key-3", plain);
    assert_string_equal(k, "a\\b:compensate:inventory");
    free(k);
    char longh[700];
    int n = snprintf(longh, sizeof longh, "Idempotency-Key: ");
    memset(longh + n, 'k', 600);
    longh[n + 600] = '\0';
    const char *overlong[] = {longh, "X-Request-Id: rid-overlong", NULL};
    k = undo_key_of("ord-key-4", overlong);
    assert_string_equal(k, "rid-overlong:compensate:inventory");
    free(k);
}

/* ---- config -----------------------------------------------------------------------------------
 */

static void check_config(const char *text, const char *needle)
{
    FILE *f = fopen(W.config_path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --check-config %s 2>&1",
             getenv("CHECKOUTD_BIN") ? getenv("CHECKOUTD_BIN") : "build/release/checkoutd",
             W.config_path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[2048];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    assert_int_not_equal(rc, 0);
    if (strstr(out, needle) == NULL)
        fail_msg("expected '%s' in: %s", needle, out);
}

static void test_config_refusals(void **state)
{
    (void)state;
    check_config("{\"validations\": [{\"name\": \"p\", \"field\": \"result\", \"url\": "
                 "\"http://127.0.0.1:1/v\", \"compensate\": {\"url\": \"http://127.0.0.1:1/u\"}}]}",
                 "compensate");
    check_config(
        "{\"validations\": [{\"name\": \"p\", \"field\": \"payment\", \"url\": "
        "\"http://127.0.0.1:1/v\", \"compensate\": {\"url\": \"https://127.0.0.1:1/u\"}}]}",
        "compensate.url");
    check_config("{\"validations\": [{\"name\": \"p\", \"field\": \"payment\", \"url\": "
                 "\"http://127.0.0.1:1/v\", \"compensate\": {\"url\": \"http://127.0.0.1:1/u\", "
                 "\"attempts\": 21}}]}",
                 "compensate.attempts");
    check_config("{\"validations\": [{\"name\": \"p\", \"field\": \"payment\", \"url\": "
                 "\"http://127.0.0.1:1/v\", \"compensate\": {\"timeout_ms\": 5}}]}",
                 "compensate.url");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_payment_voided_when_inventory_refuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_success_and_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_outcomes_and_cancelled_after_sending, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_not_sent_not_compensated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retries_and_giving_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_404_409_410_are_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_not_delayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_hangs_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_lets_compensation_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_bound_gives_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_compensates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undo_key_is_the_stores_key, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
