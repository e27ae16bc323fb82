/* status and trace: /status.json's shape and figures (in process, from windows filled by hand),
 * the "trace" config key, and against the real programs: GET /status and /status.json, and the
 * trace member of an answer (present only when enabled and asked for; absent otherwise; never on
 * a client error). */
#include "cfg.h"
#include "../service/checkout.h"
#include "../service/status.h"
#include "support/http.h"
#include "support/proc.h"
#include "win.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static const char four[] =
    "{\"listen\": \"127.0.0.1:0\", \"validations\": ["
    "{\"name\": \"address\", \"field\": \"address\", \"url\": "
    "\"http://u:pw-secret@127.0.0.1:1/a\"},"
    "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:1/i\"},"
    "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:1/p\"},"
    "{\"name\": \"fraud\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:1/f\"}]}";

static json_t *status_of(const co_service *s, int draining, int64_t now)
{
    size_t len = 0;
    char *text = st_json(s, draining, now, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    assert_null(strstr(text, "pw-secret")); /* no URL, userinfo or header value */
    /* v1.3 "Names": a validation's host and addresses are shown, never the rest of its URL */
    assert_null(strstr(text, "/a\""));
    json_error_t jerr;
    json_t *doc = json_loads(text, 0, &jerr);
    free(text);
    assert_non_null(doc);
    return doc;
}

static double num(const json_t *doc, const char *path)
{
    json_t *v = json_object_get(doc, path);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void test_status_json_shape(void **state)
{
    (void)state;
    cfg c;
    char err[256];
    assert_int_equal(cfg_load_string(&c, four, NULL, NULL, err, sizeof err), 0);
    co_service s;
    co_service_init(&s, &c, NULL, 0, NULL);
    s.windows = win_new(2, c.nvalidations);
    assert_non_null(s.windows);
    int64_t now = 5000;
    /* the last 10 s: 10 accepted and 2 failed a second; address answers in 1..100 ms; fraud's
     * calls all fail (transport); payment has rejections only (a business answer, not a fault) */
    for (int64_t sec = now - 10; sec < now; sec++) {
        for (int k = 0; k < 10; k++)
            win_checkout(s.windows, (size_t)(k % 2), sec, WIN_ACCEPTED);
        win_checkout(s.windows, 0, sec, WIN_FAILED);
        win_checkout(s.windows, 1, sec, WIN_FAILED);
        for (int k = 1; k <= 100; k++)
            win_call(s.windows, (size_t)(k % 2), sec, 0, 0, (double)k);
        for (int k = 0; k < 4; k++)
            win_call(s.windows, 0, sec, 3, TG_TRANSPORT, 0.2);
        win_call(s.windows, 1, sec, 2, TG_REJECTED, 2.0);
        win_cancelled(s.windows, 1, sec, 1);
    }
    win_checkout(s.windows, 0, now, WIN_ACCEPTED); /* the current second: not counted yet */

    json_t *doc = status_of(&s, 0, now);
    assert_string_equal(json_string_value(json_object_get(doc, "version")), CHECKOUTD_VERSION);
    assert_true(num(doc, "uptime_s") >= 0);
    assert_int_equal((int)num(doc, "inflight"), 0);
    assert_int_equal((int)num(doc, "workers"), 0);
    assert_int_equal((int)num(doc, "window_s"), 60);
    assert_true(json_is_false(json_object_get(doc, "trace")));
    assert_string_equal(json_string_value(json_object_get(doc, "health")), "failing");
    json_t *co = json_object_get(doc, "checkouts");
    json_t *r10 = json_object_get(co, "per_s_10s"), *r60 = json_object_get(co, "per_s_60s");
    assert_true(fabs(num(r10, "accepted") - 10.0) < 1e-9);
    assert_true(fabs(num(r10, "failed") - 2.0) < 1e-9);
    assert_true(fabs(num(r10, "rejected")) < 1e-9);
    assert_true(fabs(num(r60, "accepted") - 100.0 / 60) < 1e-3);
    json_t *acc = json_object_get(json_object_get(co, "series"), "accepted");
    assert_int_equal(json_array_size(acc), 60);
    assert_int_equal(json_integer_value(json_array_get(acc, 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(acc, 59)), 10);

    json_t *vals = json_object_get(doc, "validations");
    assert_int_equal(json_object_size(vals), 4);
    const char *order[] = {"address", "inventory", "payment", "fraud"};
    const char *key;
    json_t *v;
    size_t n = 0;
    json_object_foreach(vals, key, v)
    {
        assert_string_equal(key, order[n++]); /* config order */
        assert_string_equal(json_string_value(json_object_get(v, "circuit")), "closed");
        assert_int_equal(json_integer_value(json_object_get(v, "retries")), 0);
        assert_int_equal(json_integer_value(json_object_get(v, "hedges")), 0);
        const char *kinds[] = {"rejected", "upstream_error", "invalid_response", "transport",
                               "timeout"};
        for (size_t k = 0; k < 5; k++) {
            assert_true(json_is_integer(json_object_get(json_object_get(v, "errors"), kinds[k])));
            assert_true(json_is_number(
                json_object_get(json_object_get(v, "error_rate_by_kind"), kinds[k])));
        }
        json_t *series = json_object_get(v, "series");
        assert_int_equal(json_array_size(json_object_get(series, "requests")), 60);
        assert_int_equal(json_array_size(json_object_get(series, "p99_ms")), 60);
        assert_int_equal(json_array_size(json_object_get(series, "error_rate")), 60);
    }
    json_t *addr = json_object_get(vals, "address");
    assert_string_equal(json_string_value(json_object_get(addr, "state")), "ok");
    assert_true(fabs(num(addr, "requests_per_s") - 1000.0 / 60) < 1e-3);
    assert_int_equal(json_integer_value(json_object_get(addr, "requests")), 1000);
    double p50 = num(addr, "p50_ms"), p99 = num(addr, "p99_ms");
    assert_true(p50 >= 45 && p50 <= 55);
    assert_true(p99 >= 90 && p99 <= 110);
    assert_true(num(addr, "error_rate") == 0);
    /* an IP literal: its own address, no lookup (dns_age_ms null) */
    assert_string_equal(json_string_value(json_object_get(addr, "host")), "127.0.0.1");
    assert_string_equal(json_string_value(json_array_get(json_object_get(addr, "addresses"), 0)),
                        "127.0.0.1");
    assert_true(json_is_null(json_object_get(addr, "dns_age_ms")));
    assert_true(json_is_null(
        json_array_get(json_object_get(json_object_get(addr, "series"), "p99_ms"), 0)));
    json_t *fraud = json_object_get(vals, "fraud");
    assert_string_equal(json_string_value(json_object_get(fraud, "state")), "failing");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(fraud, "errors"), "transport")), 40);
    assert_true(num(fraud, "error_rate") == 1.0);
    json_t *pay = json_object_get(vals, "payment");
    assert_string_equal(json_string_value(json_object_get(pay, "state")), "ok"); /* rejections */
    assert_true(fabs(num(json_object_get(pay, "error_rate_by_kind"), "rejected") - 1.0) < 1e-9);
    json_t *inv = json_object_get(vals, "inventory");
    /* only cancelled calls: not idle, and nothing failed */
    assert_string_equal(json_string_value(json_object_get(inv, "state")), "ok");
    assert_int_equal(json_integer_value(json_object_get(inv, "cancelled")), 10);
    assert_true(json_is_null(json_object_get(inv, "p50_ms")));
    json_decref(doc);

    /* a minute later with nothing recorded: everything idle, all rates 0; draining says so */
    doc = status_of(&s, 1, now + 70);
    assert_string_equal(json_string_value(json_object_get(doc, "health")), "draining");
    addr = json_object_get(json_object_get(doc, "validations"), "address");
    assert_string_equal(json_string_value(json_object_get(addr, "state")), "idle");
    assert_true(num(addr, "requests_per_s") == 0);
    json_decref(doc);
    doc = status_of(&s, 0, now + 70);
    assert_string_equal(json_string_value(json_object_get(doc, "health")), "ok");
    json_decref(doc);

    /* without windows (none kept): the same shape, all zero */
    win_free(s.windows);
    s.windows = NULL;
    doc = status_of(&s, 0, now);
    assert_int_equal(json_object_size(json_object_get(doc, "validations")), 4);
    json_decref(doc);
    cfg_free(&c);
}

static void test_resilience_placeholder(void **state)
{
    (void)state;
    st_resilience r = {7, 7, NULL};
    st_resilience_of(NULL, 0, &r);
    assert_int_equal(r.retries, 0);
    assert_int_equal(r.hedges, 0);
    assert_string_equal(r.circuit, "closed");
}

/* With a breaker configured, /status shows its state (and the process's retries and hedges). */
static void test_resilience_of_breaker(void **state)
{
    (void)state;
    cfg c;
    char err[256];
    const char *json = "{\"validations\": [{\"name\": \"pay\", \"field\": \"f\", "
                       "\"url\": \"http://h/\", \"breaker\": {\"consecutive_failures\": 1}}]}";
    assert_int_equal(cfg_load_string(&c, json, NULL, NULL, err, sizeof err), 0);
    const char *names[] = {"pay"};
    mx *m = mx_new(names, 1);
    assert_non_null(m);
    static co_service s;
    co_service_init(&s, &c, NULL, 0, m);
    st_resilience r;
    st_resilience_of(&s, 0, &r);
    assert_string_equal(r.circuit, "closed");
    assert_non_null(s.breaker[0]);
    breaker_record(s.breaker[0], BREAKER_ADMIT, BREAKER_FAILURE, UINT64_MAX / 2); /* opens */
    st_resilience_of(&s, 0, &r);
    assert_string_equal(r.circuit, "open");
    assert_int_equal(r.retries, 0);
    breaker_destroy(s.breaker[0]);
    mx_free(m);
    cfg_free(&c);
}

static const char *env_trace_value;
static const char *env_trace(const char *name)
{
    return strcmp(name, "CHECKOUTD_TRACE") == 0 ? env_trace_value : NULL;
}

static void test_trace_config(void **state)
{
    (void)state;
    cfg c;
    char err[256];
    assert_int_equal(cfg_load_string(&c, "{}", NULL, NULL, err, sizeof err), 0);
    assert_int_equal(c.trace, 0); /* default off */
    cfg_free(&c);
    assert_int_equal(cfg_load_string(&c, "{\"trace\": true}", NULL, NULL, err, sizeof err), 0);
    assert_int_equal(c.trace, 1);
    cfg_free(&c);
    assert_int_equal(cfg_load_string(&c, "{\"trace\": 1}", "x.json", NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "x.json: trace: expected true or false, got 1"));
    assert_int_equal(cfg_load_string(&c, "{\"trace\": \"yes\"}", NULL, NULL, err, sizeof err), -1);
    env_trace_value = "1";
    assert_int_equal(cfg_load_string(&c, "{\"trace\": false}", NULL, env_trace, err, sizeof err),
                     0);
    assert_int_equal(c.trace, 1);
    cfg_free(&c);
    env_trace_value = "false";
    assert_int_equal(cfg_load_string(&c, "{\"trace\": true}", NULL, env_trace, err, sizeof err), 0);
    assert_int_equal(c.trace, 0);
    cfg_free(&c);
    env_trace_value = "yes";
    assert_int_equal(cfg_load_string(&c, "{}", "x.json", env_trace, err, sizeof err), -1);
    assert_non_null(strstr(err, "CHECKOUTD_TRACE: expected true, false, 1 or 0"));
    env_trace_value = NULL;
    /* the default config is still byte for byte the v1.1 one: trace is not in it */
    assert_null(strstr(cfg_default_json(), "trace"));
}

/* ---- against the real programs ---------------------------------------------------------------
 */

typedef struct world {
    proc upstreams, daemon;
    int up_port[3];
    int port;
    char config_path[64];
} world;

static void world_start(world *w, int trace)
{
    memset(w, 0, sizeof(*w));
    assert_int_equal(proc_start_upstreams(&w->upstreams, NULL, "/dev/null", w->up_port), 0);
    snprintf(w->config_path, sizeof(w->config_path), "/tmp/checkoutd-status-%d.json",
             (int)getpid());
    FILE *f = fopen(w->config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", %s\"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\"},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\"},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\"}"
            "]}\n",
            trace ? "\"trace\": true, " : "", w->up_port[0], w->up_port[1], w->up_port[2]);
    fclose(f);
    /* one worker: a second checkout finds the first one's upstream connections in its cache */
    char *env[] = {"CHECKOUTD_LOOPS=1", NULL};
    w->port = proc_start_checkoutd(&w->daemon, w->config_path, NULL, env, "/dev/null");
    assert_true(w->port > 0);
}

/* checkoutd must exit 0 on SIGTERM: under ASan (make test-asan) that also says the status and
 * trace paths leaked nothing. */
static void world_stop(world *w)
{
    int status = -1;
    assert_int_equal(proc_signal(&w->daemon, SIGTERM), 0);
    assert_int_equal(proc_wait_exit(&w->daemon, 15000, &status), 0);
    proc_stop(&w->daemon);
    proc_stop(&w->upstreams);
    unlink(w->config_path);
    assert_int_equal(status, 0);
}

static void order(char *buf, size_t cap, const char *token)
{
    snprintf(buf, cap,
             "{\"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, \"items\": [{\"sku\": "
             "\"SKU-1\", \"quantity\": 1}], \"payment\": {\"token\": \"%s\"}}",
             token);
}

static void post(const world *w, const char *body, const char *trace_header, http_reply *r)
{
    char url[64];
    const char *headers[3] = {"Content-Type: application/json", trace_header, NULL};
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w->port);
    assert_int_equal(http_request("POST", url, headers, body, strlen(body), 10000, r), 0);
}

/* Every attempt of every validation has the documented members. */
static void assert_trace(const json_t *trace, const char *failed_name, const char *failed_outcome)
{
    json_t *vals = json_object_get(trace, "validations");
    assert_int_equal(json_object_size(vals), 3);
    const char *name;
    json_t *v;
    json_object_foreach(vals, name, v)
    {
        json_t *attempts = json_object_get(v, "attempts");
        assert_int_equal(json_array_size(attempts), 1); /* one transfer per call today */
        json_t *a = json_array_get(attempts, 0);
        const char *times[] = {"start_ms", "dns_ms",        "connect_ms",
                               "tls_ms",   "first_byte_ms", "total_ms"};
        for (size_t k = 0; k < 6; k++) {
            json_t *t = json_object_get(a, times[k]);
            assert_true(json_is_number(t));
            assert_true(json_number_value(t) >= 0 && json_number_value(t) < 10000);
        }
        assert_true(json_is_boolean(json_object_get(a, "reused")));
        const char *outcome = json_string_value(json_object_get(a, "outcome"));
        assert_non_null(outcome);
        if (failed_name != NULL && strcmp(name, failed_name) == 0) {
            assert_string_equal(outcome, failed_outcome);
        } else if (failed_name == NULL) {
            assert_string_equal(outcome, "ok");
            assert_int_equal(json_integer_value(json_object_get(a, "http_status")), 200);
            assert_true(json_number_value(json_object_get(a, "total_ms")) > 0);
            assert_true(json_number_value(json_object_get(a, "first_byte_ms")) <=
                        json_number_value(json_object_get(a, "total_ms")));
        }
    }
}

static void test_trace_member(void **state)
{
    (void)state;
    world w;
    http_reply r;
    char body[256];
    world_start(&w, 1);
    order(body, sizeof(body), "tok_visa");
    /* enabled and asked for: present, on the 200 */
    post(&w, body, "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(r.json);
    assert_non_null(json_object_get(r.json, "results"));
    assert_trace(json_object_get(r.json, "trace"), NULL, NULL);
    http_reply_free(&r);
    /* a second one reuses the cached connections */
    post(&w, body, "X-Checkout-Trace: 1", &r);
    json_t *a = json_array_get(
        json_object_get(
            json_object_get(json_object_get(json_object_get(r.json, "trace"), "validations"),
                            "address"),
            "attempts"),
        0);
    assert_true(json_is_true(json_object_get(a, "reused")));
    http_reply_free(&r);
    /* not asked for (no header, another value): absent */
    post(&w, body, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    post(&w, body, "X-Checkout-Trace: 0", &r);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    /* on the error group: present, with the failed attempt's kind */
    order(body, sizeof(body), "tok_error");
    post(&w, body, "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 502);
    assert_non_null(json_object_get(r.json, "error_group"));
    assert_trace(json_object_get(r.json, "trace"), "payment", "upstream_error");
    http_reply_free(&r);
    /* never on a client error */
    post(&w, "{not json", "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 400);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    post(&w, "{\"address\": {}}", "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 400);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    world_stop(&w);

    /* not enabled: absent even when asked for */
    world_start(&w, 0);
    order(body, sizeof(body), "tok_visa");
    post(&w, body, "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    order(body, sizeof(body), "tok_declined");
    post(&w, body, "X-Checkout-Trace: 1", &r);
    assert_int_equal(r.status, 422);
    assert_null(json_object_get(r.json, "trace"));
    http_reply_free(&r);
    world_stop(&w);
}

static void test_status_routes(void **state)
{
    (void)state;
    world w;
    http_reply r;
    char url[64], body[256];
    world_start(&w, 0);
    order(body, sizeof(body), "tok_visa");
    for (int k = 0; k < 5; k++) {
        post(&w, body, NULL, &r);
        assert_int_equal(r.status, 200);
        http_reply_free(&r);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/status", w.port);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(http_reply_header(&r, "Content-Type"), "text/html"));
    assert_non_null(strstr(r.body, "/status.json"));
    assert_null(strstr(r.body, "src=\"http")); /* self-contained: no external asset */
    assert_null(strstr(r.body, "href=\"http"));
    http_reply_free(&r);
    assert_int_equal(http_request("POST", url, NULL, "x", 1, 5000, &r), 0);
    assert_int_equal(r.status, 405);
    http_reply_free(&r);

    /* the five checkouts show once their second is complete */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/status.json", w.port);
    double until = proc_now_ms() + 5000;
    long requests = 0;
    while (requests < 5 && proc_now_ms() < until) {
        assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, &r), 0);
        assert_int_equal(r.status, 200);
        assert_non_null(r.json);
        json_t *addr = json_object_get(json_object_get(r.json, "validations"), "address");
        requests = (long)json_integer_value(json_object_get(addr, "requests"));
        if (requests >= 5) {
            assert_string_equal(json_string_value(json_object_get(addr, "circuit")), "closed");
            assert_string_equal(json_string_value(json_object_get(r.json, "health")), "ok");
            assert_true(json_number_value(json_object_get(addr, "p99_ms")) > 0);
            assert_int_equal(json_integer_value(json_object_get(r.json, "inflight")), 0);
            assert_true(json_integer_value(json_object_get(r.json, "workers")) >= 1);
            /* the default store is the embedded one; 5 checkouts without a key stored nothing */
            json_t *idem = json_object_get(r.json, "idempotency");
            assert_string_equal(json_string_value(json_object_get(idem, "store")), "memory");
            assert_string_equal(json_string_value(json_object_get(idem, "state")), "up");
            assert_int_equal(json_integer_value(json_object_get(idem, "entries")), 0);
        }
        http_reply_free(&r);
        if (requests < 5)
            usleep(200 * 1000);
    }
    assert_int_equal(requests, 5);
    world_stop(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_json_shape),     cmocka_unit_test(test_resilience_placeholder),
        cmocka_unit_test(test_resilience_of_breaker), cmocka_unit_test(test_trace_config),
        cmocka_unit_test(test_trace_member),          cmocka_unit_test(test_status_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
