/* Integration tests: the real checkoutd and fake-upstreams programs on free loopback ports, driven
 * over HTTP. Every answer of the contract's POST /checkout section and every row of its client
 * error table; what the upstreams receive; the proof of cancellation; and the invariant that each
 * configured validation appears exactly once in every answer. */
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static const char *const names[] = {"address", "inventory", "payment"};

typedef struct world {
    proc upstreams, daemon;
    int up_port[3]; /* address, inventory, payment */
    int port;       /* checkoutd */
    char config_path[64];
    char log_path[64]; /* checkoutd's stderr: its JSON log lines */
    /* a second checkoutd, for the tests that need payment to outlive the deadline (start_slow) */
    proc slow;
    int slow_port;
    char slow_config[64], slow_log[64];
} world;

static world w;

/* Writes a config for the fake upstreams (payment_timeout_ms for the payment call). */
static int write_config(const char *path, const int ports[3], long payment_timeout_ms)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 4000, \"max_body_bytes\": 4096,\n"
            " \"validations\": [\n"
            "  {\"name\": \"address\", \"field\": \"address\", \"url\": "
            "\"http://127.0.0.1:%d/validate\", \"timeout_ms\": 3000},\n"
            "  {\"name\": \"inventory\", \"field\": \"items\", \"url\": "
            "\"http://127.0.0.1:%d/check\", \"timeout_ms\": 3000},\n"
            "  {\"name\": \"payment\", \"field\": \"payment\", \"url\": "
            "\"http://127.0.0.1:%d/verify\", \"timeout_ms\": %ld}]}\n",
            ports[0], ports[1], ports[2], payment_timeout_ms);
    return fclose(f) == 0 ? 0 : -1;
}

static int start_daemon(proc *p, const char *config, char *const env[])
{
    return proc_start_checkoutd(p, config, NULL, env, "/dev/null");
}

static int setup_world(void **state)
{
    (void)state;
    memset(&w, 0, sizeof(w));
    snprintf(w.config_path, sizeof(w.config_path), "/tmp/checkoutd-it-%d.json", (int)getpid());
    snprintf(w.log_path, sizeof(w.log_path), "/tmp/checkoutd-it-%d.log", (int)getpid());
    unlink(w.log_path);
    if (proc_start_upstreams(&w.upstreams, NULL, "/dev/null", w.up_port) != 0)
        return -1;
    if (write_config(w.config_path, w.up_port, 1500) != 0)
        return -1;
    w.port = proc_start_checkoutd(&w.daemon, w.config_path, NULL, NULL, w.log_path);
    return w.port > 0 ? 0 : -1;
}

/* Both programs must drain and exit 0 on SIGTERM; under ASan a leak makes that exit non-zero. */
static int teardown_world(void **state)
{
    (void)state;
    int daemon_status = -1, upstreams_status = -1;
    proc_signal(&w.daemon, SIGTERM);
    proc_wait_exit(&w.daemon, 10000, &daemon_status);
    proc_signal(&w.upstreams, SIGTERM);
    proc_wait_exit(&w.upstreams, 10000, &upstreams_status);
    proc_stop(&w.daemon);
    proc_stop(&w.upstreams);
    proc_stop(&w.slow);
    unlink(w.config_path);
    unlink(w.log_path);
    unlink(w.slow_config);
    unlink(w.slow_log);
    if (daemon_status != 0 || upstreams_status != 0) {
        fprintf(stderr, "exit status: checkoutd %d, fake-upstreams %d (want 0 and 0)\n",
                daemon_status, upstreams_status);
        return -1;
    }
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

static const char *order_with(const char *sku, const char *token, const char *country)
{
    static char body[1024];
    snprintf(
        body, sizeof(body),
        "{\"order_id\": \"ord-1001\", \"address\": {\"name\": \"Ada\", \"line1\": \"1 Main St\", "
        "\"city\": \"Springfield\", \"postal_code\": \"12345\", \"country\": \"%s\"}, "
        "\"items\": [{\"sku\": \"%s\", \"quantity\": 2}], \"payment\": {\"method\": \"card\", "
        "\"token\": \"%s\", \"amount\": 2598, \"currency\": \"USD\"}}",
        country, sku, token);
    return body;
}

static void post_at(int port, const char *body, const char *const headers[], http_reply *r)
{
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", port);
    memset(r, 0, sizeof(*r));
    http_request("POST", url, headers ? headers : json_only, body, strlen(body), 15000, r);
}

static void post(const char *body, const char *const headers[], http_reply *r)
{
    post_at(w.port, body, headers, r);
}

/* A second checkoutd on the same upstreams whose payment may take 10 s: its tok_slow checkouts
 * last until the deadline (4 s) unless something cancels them. Log into w.slow_log. */
static void start_slow(void)
{
    snprintf(w.slow_config, sizeof w.slow_config, "/tmp/checkoutd-it-slow-%d.json", (int)getpid());
    snprintf(w.slow_log, sizeof w.slow_log, "/tmp/checkoutd-it-slow-%d.log", (int)getpid());
    unlink(w.slow_log);
    assert_int_equal(write_config(w.slow_config, w.up_port, 10000), 0);
    w.slow_port = proc_start_checkoutd(&w.slow, w.slow_config, NULL, NULL, w.slow_log);
    assert_true(w.slow_port > 0);
}

/* SIGTERM: it drains and exits 0 (under ASan, no leak). */
static void stop_slow(void)
{
    int status = -1;
    assert_int_equal(proc_signal(&w.slow, SIGTERM), 0);
    assert_int_equal(proc_wait_exit(&w.slow, 15000, &status), 0);
    assert_int_equal(status, 0);
    proc_stop(&w.slow);
}

static json_t *fake_get(int port, const char *path)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    http_request("GET", url, NULL, NULL, 0, 5000, &r);
    json_t *doc = json_incref(r.json);
    http_reply_free(&r);
    return doc;
}

static long fake_stat(int port, const char *counter)
{
    json_t *doc = fake_get(port, "/_fake/stats");
    long v = (long)json_integer_value(json_object_get(doc, counter));
    json_decref(doc);
    return v;
}

static long upstream_requests(void)
{
    return fake_stat(w.up_port[0], "requests") + fake_stat(w.up_port[1], "requests") +
           fake_stat(w.up_port[2], "requests");
}

static int in_string_array(const json_t *arr, const char *name)
{
    size_t i;
    json_t *v;
    int n = 0;
    json_array_foreach(arr, i, v) n += json_is_string(v) && strcmp(json_string_value(v), name) == 0;
    return n;
}

/* Each configured validation appears exactly once across results/completed, errors, cancelled. */
static void assert_each_validation_once(const json_t *doc)
{
    const json_t *results = json_object_get(doc, "results");
    const json_t *completed = json_object_get(doc, "completed");
    const json_t *cancelled = json_object_get(doc, "cancelled");
    const json_t *errors = json_object_get(json_object_get(doc, "error_group"), "errors");
    size_t total = json_object_size(results) + json_array_size(errors);
    if (results == NULL) {
        assert_true(json_is_array(completed));
        assert_true(json_is_array(cancelled));
        total += json_array_size(completed) + json_array_size(cancelled);
    }
    assert_int_equal(total, 3);
    for (size_t k = 0; k < 3; k++) {
        int seen = json_object_get(results, names[k]) != NULL;
        seen += in_string_array(completed, names[k]) + in_string_array(cancelled, names[k]);
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e) seen +=
            strcmp(json_string_value(json_object_get(e, "validation")), names[k]) == 0;
        if (seen != 1)
            fail_msg("validation %s appears %d times", names[k], seen);
    }
}

static const json_t *first_error(const json_t *doc)
{
    return json_array_get(json_object_get(json_object_get(doc, "error_group"), "errors"), 0);
}

static void assert_error_fields(const json_t *e)
{
    static const char *const keys[] = {"validation", "kind",       "http_status", "message",
                                       "upstream",   "elapsed_ms", "attempts"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (json_object_get(e, keys[i]) == NULL)
            fail_msg("error entry lacks %s", keys[i]);
}

static void assert_client_error(const http_reply *r, long status, const char *code)
{
    assert_int_equal(r->status, status);
    const char *ct = http_reply_header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    json_t *err = json_object_get(r->json, "error");
    assert_string_equal(json_string_value(json_object_get(err, "code")), code);
    assert_true(json_string_length(json_object_get(err, "message")) > 0);
}

/* ---- POST /checkout answers ------------------------------------------------------------------ */

static void test_accepted(void **state)
{
    (void)state;
    http_reply r;
    post(order_with("SKU-1", "tok_visa", "US"), NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "accepted");
    assert_string_equal(json_string_value(json_object_get(r.json, "order_id")), "ord-1001");
    json_t *results = json_object_get(r.json, "results");
    assert_true(json_is_true(json_object_get(json_object_get(results, "payment"), "authorized")));
    assert_true(json_is_number(json_object_get(r.json, "elapsed_ms")));
    assert_null(json_object_get(r.json, "error_group"));
    assert_each_validation_once(r.json);
    assert_non_null(http_reply_header(&r, "X-Request-Id"));
    http_reply_free(&r);
}

static void test_upstreams_get_contract_body_and_headers(void **state)
{
    (void)state;
    static const char *const headers[] = {
        "Content-Type: application/json; charset=utf-8", "X-Request-Id: req-abc-123",
        "Idempotency-Key: idem-42",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", NULL};
    http_reply r;
    post(order_with("SKU-1", "tok_visa", "US"), headers, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(http_reply_header(&r, "X-Request-Id"), "req-abc-123");
    http_reply_free(&r);

    json_t *sent = json_loads(order_with("SKU-1", "tok_visa", "US"), 0, NULL);
    static const char *const fields[] = {"address", "items", "payment"};
    for (int i = 0; i < 3; i++) {
        json_t *last = fake_get(w.up_port[i], "/_fake/last");
        json_t *h = json_object_get(last, "headers");
        assert_string_equal(json_string_value(json_object_get(h, "x-request-id")), "req-abc-123");
        assert_string_equal(json_string_value(json_object_get(h, "idempotency-key")), "idem-42");
        assert_string_equal(json_string_value(json_object_get(h, "traceparent")),
                            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_non_null(
            strstr(json_string_value(json_object_get(h, "content-type")), "application/json"));
        json_t *want = json_pack("{s:s, s:O}", "order_id", "ord-1001", fields[i],
                                 json_object_get(sent, fields[i]));
        assert_true(json_equal(json_object_get(last, "body"), want));
        json_decref(want);
        json_decref(last);
    }
    json_decref(sent);
}

static void test_generated_ids_shared_by_every_call(void **state)
{
    (void)state;
    const char *body =
        "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [], "
        "\"payment\": {\"token\": \"tok_visa\"}}";
    http_reply r;
    post(body, NULL, &r);
    assert_int_equal(r.status, 200);
    const char *order_id = json_string_value(json_object_get(r.json, "order_id"));
    assert_non_null(order_id);
    assert_true(strlen(order_id) > 0);
    const char *rid = http_reply_header(&r, "X-Request-Id");
    assert_non_null(rid);
    for (int i = 0; i < 3; i++) {
        json_t *last = fake_get(w.up_port[i], "/_fake/last");
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(last, "headers"), "x-request-id")),
            rid);
        assert_string_equal(
            json_string_value(json_object_get(json_object_get(last, "body"), "order_id")),
            order_id);
        assert_null(json_object_get(json_object_get(last, "headers"), "idempotency-key"));
        json_decref(last);
    }
    http_reply_free(&r);
}

/* The proof of cancellation: inventory fails after a few ms; the payment call (5 s) is aborted,
 * the fake payment service sees its client close early, and the answer comes long before 5 s.
 * On a checkoutd whose payment timeout (10 s) outlives the deadline (4 s): a checkout that did not
 * cancel payment would answer at the deadline, not within 2 s (with the shared world's payment
 * timeout of 1500 ms it would have passed the bound too). */
static void test_rejection_cancels_slow_payment(void **state)
{
    (void)state;
    start_slow();
    long closed_before = fake_stat(w.up_port[2], "closed_early");
    http_reply r;
    post_at(w.slow_port, order_with("OOS-9", "tok_slow", "US"), NULL, &r);
    assert_int_equal(r.status, 422);
    assert_true(r.elapsed_ms < 2000); /* uncancelled: 4000 (deadline); payment alone: 5000 */
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "rejected");
    const json_t *e = first_error(r.json);
    assert_error_fields(e);
    assert_string_equal(json_string_value(json_object_get(e, "validation")), "inventory");
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "rejected");
    assert_int_equal(json_integer_value(json_object_get(e, "http_status")), 409);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "upstream"), "sku")),
                        "OOS-9");
    assert_non_null(strstr(json_string_value(json_object_get(e, "message")), "OOS-9"));
    assert_int_equal(in_string_array(json_object_get(r.json, "cancelled"), "payment"), 1);
    assert_null(json_object_get(r.json, "results"));
    assert_each_validation_once(r.json);
    http_reply_free(&r);

    long closed = closed_before;
    for (int i = 0; i < 200 && closed == closed_before; i++) {
        usleep(10 * 1000);
        closed = fake_stat(w.up_port[2], "closed_early");
    }
    assert_int_equal(closed, closed_before + 1);
    stop_slow();
}

static void expect_failure(const char *body, long status, const char *word, const char *validation,
                           const char *kind, long upstream_status)
{
    http_reply r;
    post(body, NULL, &r);
    assert_int_equal(r.status, status);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), word);
    const json_t *e = first_error(r.json);
    assert_error_fields(e);
    assert_string_equal(json_string_value(json_object_get(e, "validation")), validation);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), kind);
    if (upstream_status > 0)
        assert_int_equal(json_integer_value(json_object_get(e, "http_status")), upstream_status);
    else
        assert_true(json_is_null(json_object_get(e, "http_status")));
    assert_each_validation_once(r.json);
    http_reply_free(&r);
}

static void test_invalid_address_is_422(void **state)
{
    (void)state;
    expect_failure(order_with("SKU-1", "tok_visa", "ZZ"), 422, "rejected", "address", "rejected",
                   422);
}

static void test_declined_card_is_422(void **state)
{
    (void)state;
    expect_failure(order_with("SKU-1", "tok_declined", "US"), 422, "rejected", "payment",
                   "rejected", 402);
}

static void test_upstream_500_is_502(void **state)
{
    (void)state;
    expect_failure(order_with("SKU-1", "tok_error", "US"), 502, "failed", "payment",
                   "upstream_error", 500);
}

static void test_garbage_2xx_is_502(void **state)
{
    (void)state;
    http_reply r;
    post(order_with("SKU-1", "tok_garbage", "US"), NULL, &r);
    assert_int_equal(r.status, 502);
    const json_t *e = first_error(r.json);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "invalid_response");
    assert_true(json_is_null(json_object_get(e, "upstream")));
    assert_int_equal(json_integer_value(json_object_get(e, "http_status")), 200);
    http_reply_free(&r);
}

static void test_slow_payment_times_out_504(void **state)
{
    (void)state;
    http_reply r;
    post(order_with("SKU-1", "tok_slow", "US"), NULL, &r);
    assert_int_equal(r.status, 504);
    assert_true(r.elapsed_ms < 4000); /* payment timeout_ms is 1500; the upstream takes 5000 */
    const json_t *e = first_error(r.json);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "timeout");
    assert_string_equal(json_string_value(json_object_get(e, "validation")), "payment");
    assert_int_equal(json_array_size(json_object_get(r.json, "completed")), 2);
    assert_each_validation_once(r.json);
    http_reply_free(&r);
}

/* A second daemon whose payment URL (overridden from the environment) points at a closed port. */
static void test_unreachable_upstream_is_transport_502(void **state)
{
    (void)state;
    int closed_port = http_free_port();
    char env_url[96];
    snprintf(env_url, sizeof(env_url), "CHECKOUTD_PAYMENT_URL=http://127.0.0.1:%d/verify",
             closed_port);
    char *env[] = {env_url, NULL};
    proc other = {0};
    int main_port = w.port;
    w.port = start_daemon(&other, w.config_path, env);
    assert_true(w.port > 0);
    expect_failure(order_with("SKU-1", "tok_visa", "US"), 502, "failed", "payment", "transport", 0);
    proc_stop(&other);
    w.port = main_port;
}

/* ---- client errors -------------------------------------------------------------------------- */

static void expect_client_error(const char *body, const char *const headers[], long status,
                                const char *code)
{
    long before = upstream_requests();
    http_reply r;
    post(body, headers, &r);
    assert_client_error(&r, status, code);
    http_reply_free(&r);
    assert_int_equal(upstream_requests(), before); /* nothing went upstream */
}

static void test_invalid_json_400(void **state)
{
    (void)state;
    http_reply r;
    post("{\"order_id\": \"x\",\n  \"items\": [1,", NULL, &r);
    assert_client_error(&r, 400, "invalid_json");
    const char *msg =
        json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    assert_non_null(strstr(msg, "line 2"));
    assert_non_null(strstr(msg, "column"));
    http_reply_free(&r);
    expect_client_error("", NULL, 400, "invalid_json");
    expect_client_error("\xff\xfe{}", NULL, 400, "invalid_json");
}

static void test_invalid_request_400(void **state)
{
    (void)state;
    expect_client_error("[1, 2, 3]", NULL, 400, "invalid_request");
    expect_client_error("\"text\"", NULL, 400, "invalid_request");
    expect_client_error("{\"address\": {}, \"items\": []}", NULL, 400, "invalid_request");
    const char *fields = "\"address\": {}, \"items\": [], \"payment\": {}";
    char body[512];
    static const char *const bad_ids[] = {"null", "42", "{}", "\"\"", "[\"a\"]"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
        snprintf(body, sizeof(body), "{\"order_id\": %s, %s}", bad_ids[i], fields);
        expect_client_error(body, NULL, 400, "invalid_request");
    }
    char long_id[130];
    memset(long_id, 'x', 129);
    long_id[129] = '\0';
    snprintf(body, sizeof(body), "{\"order_id\": \"%s\", %s}", long_id, fields);
    expect_client_error(body, NULL, 400, "invalid_request");
}

static void test_order_id_of_128_code_points_accepted(void **state)
{
    (void)state;
    char id[128 * 2 + 1];
    for (int i = 0; i < 128; i++) { /* "é" is two bytes: 256 bytes, 128 code points */
        id[2 * i] = (char)0xC3;
        id[2 * i + 1] = (char)0xA9;
    }
    id[256] = '\0';
    char body[1024];
    snprintf(body, sizeof(body),
             "{\"order_id\": \"%s\", \"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, "
             "\"items\": [], \"payment\": {\"token\": \"tok_visa\"}}",
             id);
    http_reply r;
    post(body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "order_id")), id);
    http_reply_free(&r);
}

/* A valid order of exactly n bytes (spaces before its closing brace), malloc'd. */
static char *order_of_size(size_t n)
{
    const char *order = order_with("SKU-1", "tok_visa", "US");
    size_t len = strlen(order);
    assert_true(n >= len);
    char *b = malloc(n + 1);
    assert_non_null(b);
    memcpy(b, order, len - 1);
    memset(b + len - 1, ' ', n - len);
    b[n - 1] = '}';
    b[n] = '\0';
    return b;
}

/* max_body_bytes is 4096 in this config: a body of exactly 4096 bytes is a checkout, 4097 is 413,
 * with a Content-Length and chunked (where the size is known only while reading); 5000 too. */
static void test_body_too_large_413(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w.port);
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    http_reply r;
    const size_t sizes[] = {4096, 4097, 5000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        char *big = order_of_size(n);
        assert_int_equal(strlen(big), n);
        if (n <= 4096) {
            post(big, NULL, &r);
            assert_int_equal(r.status, 200);
            http_reply_free(&r);
            http_request_chunked("POST", url, json_only, big, n, 1000, 0, 10000, &r);
            assert_int_equal(r.status, 200);
            http_reply_free(&r);
        } else {
            expect_client_error(big, NULL, 413, "body_too_large");
            http_request_chunked("POST", url, json_only, big, n, 1000, 0, 10000, &r);
            assert_client_error(&r, 413, "body_too_large");
            http_reply_free(&r);
        }
        free(big);
    }
}

static void test_unsupported_media_type_415(void **state)
{
    (void)state;
    static const char *const text[] = {"Content-Type: text/plain", NULL};
    static const char *const none[] = {"Content-Type:", NULL};
    static const char *const form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    static const char *const jsonx[] = {"Content-Type: application/jsonx", NULL};
    const char *body = order_with("SKU-1", "tok_visa", "US");
    expect_client_error(body, text, 415, "unsupported_media_type");
    expect_client_error(body, none, 415, "unsupported_media_type");
    expect_client_error(body, form, 415, "unsupported_media_type");
    expect_client_error(body, jsonx, 415, "unsupported_media_type");
}

static void test_method_not_allowed_405(void **state)
{
    (void)state;
    static const char *const methods[] = {"GET", "PUT", "DELETE", "PATCH"};
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w.port);
    for (size_t i = 0; i < 4; i++) {
        http_reply r;
        http_request(methods[i], url, NULL, NULL, 0, 5000, &r);
        assert_client_error(&r, 405, "method_not_allowed");
        assert_string_equal(http_reply_header(&r, "Allow"), "POST");
        http_reply_free(&r);
    }
}

static void test_unknown_path_404(void **state)
{
    (void)state;
    static const char *const paths[] = {"/", "/checkout/x", "/nope", "/checkoutx"};
    for (size_t i = 0; i < 4; i++) {
        char url[96];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", w.port, paths[i]);
        http_reply r;
        http_request("POST", url, NULL, "{}", 2, 5000, &r);
        assert_client_error(&r, 404, "not_found");
        http_reply_free(&r);
    }
}

static void test_healthz(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz", w.port);
    http_reply r;
    http_request("GET", url, NULL, NULL, 0, 5000, &r);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
}

/* ---- operations: metrics and logs ------------------------------------------------------------ */

static char *get_text(const char *path)
{
    char url[96];
    http_reply r;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", w.port, path);
    http_request("GET", url, NULL, NULL, 0, 5000, &r);
    assert_int_equal(r.status, 200);
    char *text = strdup(r.body);
    http_reply_free(&r);
    return text;
}

static double metric(const char *text, const char *series)
{
    double v = -1;
    if (prom_value(text, series, &v) != 0)
        fail_msg("no series %s", series);
    return v;
}

/* The live /metrics parses as Prometheus text, and its counters move by exactly what was done. */
static void test_metrics_move(void **state)
{
    (void)state;
    char err[256];
    char *before = get_text("/metrics");
    if (prom_check(before, err, sizeof(err)) != 0)
        fail_msg("/metrics: %s", err);
    http_reply r;
    post(order_with("SKU-1", "tok_visa", "US"), NULL, &r);
    http_reply_free(&r);
    post(order_with("OOS-1", "tok_visa", "US"), NULL, &r);
    http_reply_free(&r);
    post(order_with("SKU-1", "tok_error", "US"), NULL, &r);
    http_reply_free(&r);
    post("{nope", NULL, &r);
    http_reply_free(&r);
    char *after = get_text("/metrics");
    if (prom_check(after, err, sizeof(err)) != 0)
        fail_msg("/metrics: %s", err);

    static const char *const series[] = {
        "checkoutd_checkouts_total{outcome=\"accepted\"}",
        "checkoutd_checkouts_total{outcome=\"rejected\"}",
        "checkoutd_checkouts_total{outcome=\"failed\"}",
        "checkoutd_checkouts_total{outcome=\"invalid_json\"}",
        "checkoutd_checkout_duration_seconds_count",
        "checkoutd_upstream_requests_total{validation=\"payment\",outcome=\"upstream_error\"}",
        "checkoutd_upstream_requests_total{validation=\"inventory\",outcome=\"rejected\"}",
    };
    static const double moved[] = {1, 1, 1, 1, 3, 1, 1};
    for (size_t i = 0; i < sizeof(moved) / sizeof(moved[0]); i++) {
        double d = metric(after, series[i]) - metric(before, series[i]);
        if (d != moved[i])
            fail_msg("%s moved by %g, want %g", series[i], d, moved[i]);
    }
    /* address never fails here: each of its 3 calls answered ok, or was cancelled when another
     * validation of the same checkout failed first (which comes first is a race) */
    const char *ok = "checkoutd_upstream_requests_total{validation=\"address\",outcome=\"ok\"}";
    const char *cancelled = "checkoutd_validations_cancelled_total{validation=\"address\"}";
    double ok_moved = metric(after, ok) - metric(before, ok);
    double cancelled_moved = metric(after, cancelled) - metric(before, cancelled);
    assert_true(ok_moved >= 1);
    assert_true(ok_moved + cancelled_moved == 3);
    assert_true(metric(after, "checkoutd_inflight_checkouts") == 0);
    assert_true(metric(after, "checkoutd_open_connections") >= 1);
    free(before);
    free(after);
}

/* The inventory rejection cancels the slow payment: counted as cancelled, not as a call outcome. */
static void test_metrics_count_cancelled(void **state)
{
    (void)state;
    const char *series = "checkoutd_validations_cancelled_total{validation=\"payment\"}";
    char *before = get_text("/metrics");
    http_reply r;
    post(order_with("OOS-2", "tok_slow", "US"), NULL, &r);
    assert_int_equal(r.status, 422);
    http_reply_free(&r);
    char *after = get_text("/metrics");
    assert_true(metric(after, series) - metric(before, series) == 1);
    free(before);
    free(after);
}

/* Every line checkoutd logged is one JSON object; checkouts have their fields; no payment token
 * or card number ever appears, even when the client puts one in its ids. */
static void test_logs_are_json_without_secrets(void **state)
{
    (void)state;
    static const char *const headers[] = {"Content-Type: application/json",
                                          "X-Request-Id: tok_live_secret", NULL};
    const char *body = "{\"order_id\": \"4111111111111111\", \"address\": {\"postal_code\": "
                       "\"1\", \"country\": \"US\"}, \"items\": [], \"payment\": "
                       "{\"token\": \"tok_visa\", \"card\": \"4111111111111111\"}}";
    http_reply r;
    post(body, headers, &r);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);

    FILE *f = fopen(w.log_path, "r");
    assert_non_null(f);
    char line[16384];
    int lines = 0, checkouts = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lines++;
        assert_null(strstr(line, "tok_visa"));
        assert_null(strstr(line, "tok_live_secret"));
        assert_null(strstr(line, "4111111111111111"));
        json_error_t jerr;
        json_t *doc = json_loads(line, 0, &jerr);
        if (!json_is_object(doc))
            fail_msg("log line %d is not a JSON object: %s", lines, line);
        const char *event = json_string_value(json_object_get(doc, "event"));
        assert_non_null(event);
        assert_non_null(json_string_value(json_object_get(doc, "ts")));
        if (strcmp(event, "checkout") == 0 && json_object_get(doc, "validations") != NULL &&
            json_object_size(json_object_get(doc, "validations")) == 3) {
            checkouts++;
            assert_non_null(json_object_get(doc, "request_id"));
            assert_non_null(json_object_get(doc, "order_id"));
            assert_true(json_is_integer(json_object_get(doc, "http_status")));
            assert_true(json_is_number(json_object_get(doc, "elapsed_ms")));
            json_t *pay = json_object_get(json_object_get(doc, "validations"), "payment");
            assert_non_null(json_string_value(json_object_get(pay, "outcome")));
        }
        json_decref(doc);
    }
    fclose(f);
    assert_true(lines >= 2); /* the start line and at least one checkout */
    assert_true(checkouts >= 1);
}

/* Clients that give up before their answers still leave each checkout's log line (found by the
 * soak test: the line was written only when the answer was sent, and the resumed connection of a
 * client that had gone is often closed without that). 20 at once, on the checkoutd whose tok_slow
 * checkouts last until the deadline (4 s): each client sends its request, and once all 20 are in
 * flight (the gauge says so, so none has been answered), every connection is closed. */
static int count_gone_lines(const char *path)
{
    int n = 0;
    char line[16384];
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        n += strstr(line, "\"order_id\":\"gone-") != NULL &&
             strstr(line, "\"event\":\"checkout\"") != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

static double inflight_at(int port)
{
    char url[64];
    http_reply r;
    double v = -1;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    if (http_request("GET", url, NULL, NULL, 0, 5000, &r) == 0 && r.body != NULL)
        prom_value(r.body, "checkoutd_inflight_checkouts", &v);
    http_reply_free(&r);
    return v;
}

static void test_log_line_for_vanished_clients(void **state)
{
    (void)state;
    enum { CLIENTS = 20 };
    int fds[CLIENTS];
    start_slow();
    assert_int_equal(inflight_at(w.slow_port), 0); /* a real baseline, not a missing metric */
    for (int i = 0; i < CLIENTS; i++) {
        char body[256], req[512];
        int blen = snprintf(body, sizeof body,
                            "{\"order_id\": \"gone-%d\", \"address\": {\"postal_code\": \"1\", "
                            "\"country\": \"US\"}, \"items\": [], \"payment\": {\"token\": "
                            "\"tok_slow\"}}",
                            i);
        int n = snprintf(req, sizeof req,
                         "POST /checkout HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         "application/json\r\nContent-Length: %d\r\n\r\n%s",
                         blen, body);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w.slow_port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
        assert_int_equal(send(fds[i], req, (size_t)n, MSG_NOSIGNAL), n);
    }
    double inflight = 0, until = proc_now_ms() + 3500; /* they last 4 s */
    while ((inflight = inflight_at(w.slow_port)) < CLIENTS && proc_now_ms() < until)
        usleep(10 * 1000);
    assert_int_equal(inflight, CLIENTS);
    for (int i = 0; i < CLIENTS; i++)
        close(fds[i]); /* the clients go */
    int seen = 0;
    for (int i = 0; i < 200 && seen < CLIENTS; i++) { /* the deadline ends them: up to 10 s */
        usleep(50 * 1000);
        seen = count_gone_lines(w.slow_log);
    }
    assert_int_equal(seen, CLIENTS);
    stop_slow();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_upstreams_get_contract_body_and_headers),
        cmocka_unit_test(test_generated_ids_shared_by_every_call),
        cmocka_unit_test(test_rejection_cancels_slow_payment),
        cmocka_unit_test(test_invalid_address_is_422),
        cmocka_unit_test(test_declined_card_is_422),
        cmocka_unit_test(test_upstream_500_is_502),
        cmocka_unit_test(test_garbage_2xx_is_502),
        cmocka_unit_test(test_slow_payment_times_out_504),
        cmocka_unit_test(test_unreachable_upstream_is_transport_502),
        cmocka_unit_test(test_invalid_json_400),
        cmocka_unit_test(test_invalid_request_400),
        cmocka_unit_test(test_order_id_of_128_code_points_accepted),
        cmocka_unit_test(test_body_too_large_413),
        cmocka_unit_test(test_unsupported_media_type_415),
        cmocka_unit_test(test_method_not_allowed_405),
        cmocka_unit_test(test_unknown_path_404),
        cmocka_unit_test(test_healthz),
        cmocka_unit_test(test_metrics_move),
        cmocka_unit_test(test_metrics_count_cancelled),
        cmocka_unit_test(test_logs_are_json_without_secrets),
        cmocka_unit_test(test_log_line_for_vanished_clients),
    };
    return cmocka_run_group_tests_name("checkoutd", tests, setup_world, teardown_world);
}
