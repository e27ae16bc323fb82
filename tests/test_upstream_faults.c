/* Upstream faults: task groups (lib/tg, its loop on its own thread) against the raw-TCP fault
 * server (support/fault), and then the real checkoutd with its payment upstream pointed at the
 * fault server. Each fault must end in the contract's kind (and, through checkoutd, its status):
 *
 *   fault                            kind              checkoutd
 *   reset mid-answer                 transport         502
 *   truncated body (FIN)             transport         502
 *   100 MB body, 1 MiB limit         invalid_response  502 (fast, memory bounded)
 *   Content-Length 2, more sent      invalid_response  502 (the 2 declared bytes are no object)
 *   Content-Length 50, 12 sent       timeout           504 (at the call's timeout_ms)
 *   never answers                    timeout           504 (the server sees the close)
 *   "HTTP/1.1 abc" / random bytes    invalid_response  502 ("an answer that is not HTTP")
 *   a slow trickle within timeout    ok                200
 *
 * Time bounds are generous (the machine is shared): a fault that should take 50 ms is allowed 3 s,
 * a timeout of 500 ms must come after 450 ms and before 4 s. Set FAULTS_VERBOSE=1 to print what
 * each fault gave (kind, status, time, message). */
#include "eg.h"
#include "tg.h"

#include "support/fault.h"
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

#define MAX_BODY_BYTES  1048576L /* the loop's max_body_bytes, the contract's default */
#define LOAD_GROUPS     20       /* groups in flight at once in the restart test */
#define INFLIGHT_GROUPS 4        /* groups cut off by the restart */

typedef struct fixture {
    fault *up;
    tg_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done_calls;
} fixture;

static fixture fx;

static int verbose(void)
{
    const char *v = getenv("FAULTS_VERBOSE");
    return v != NULL && strcmp(v, "1") == 0;
}

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    pthread_mutex_init(&fx.lock, NULL);
    pthread_cond_init(&fx.cond, NULL);
    fx.up = fault_start(0);
    tg_loop_options o = {.max_body_bytes = MAX_BODY_BYTES, .max_connections = 0};
    fx.loop = tg_loop_new(&o);
    if (fx.up == NULL || fx.loop == NULL || tg_loop_start(fx.loop) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tg_loop_free(fx.loop);
    fault_stop(fx.up);
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
    pthread_cond_broadcast(&fx.cond);
    pthread_mutex_unlock(&fx.lock);
}

static int done_count(void)
{
    pthread_mutex_lock(&fx.lock);
    int n = fx.done_calls;
    pthread_mutex_unlock(&fx.lock);
    return n;
}

/* Waits until done ran n times in all (at most timeout_ms). 0, or -1 on timeout. */
static int wait_done(int n, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&fx.lock);
    while (fx.done_calls < n) {
        if (pthread_cond_timedwait(&fx.cond, &fx.lock, &until) != 0)
            break;
    }
    int ok = fx.done_calls >= n;
    pthread_mutex_unlock(&fx.lock);
    return ok ? 0 : -1;
}

/* A group of n calls to the fault server's paths. */
static tg_group *group_of(long deadline_ms, long timeout_ms, size_t n, const char *const paths[])
{
    static const char *const headers[] = {"Content-Type: application/json", "X-Request-Id: f-1",
                                          NULL};
    tg_group *g = tg_group_new(n, deadline_ms, on_done, NULL);
    assert_non_null(g);
    for (size_t i = 0; i < n; i++) {
        char url[256];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", fault_port(fx.up), paths[i]);
        char *body = strdup("{\"order_id\":\"o-1\",\"payment\":{\"token\":\"tok_visa\"}}");
        assert_non_null(body);
        assert_int_equal(tg_call_set(g, i, url, body, strlen(body), headers, timeout_ms), 0);
    }
    return g;
}

/* Submits g and waits for its done (at most 20 s). Returns the wall time in ms. */
static double run(tg_group *g)
{
    int before = done_count();
    double t0 = proc_now_ms();
    assert_int_equal(tg_submit(fx.loop, g), 0);
    assert_int_equal(wait_done(before + 1, 20000), 0);
    return proc_now_ms() - t0;
}

static void show(const char *what, const tg_result *r, double ms)
{
    if (verbose())
        print_message("  %-22s state %d kind %-16s http_status %ld  %7.1f ms  \"%s\"\n", what,
                      r->state, tg_kind_name(r->kind), r->http_status, ms, r->message);
}

/* One call to /<mode> that must fail with kind within max_ms; returns the group (caller frees). */
static tg_group *expect_fault(fault_mode mode, long timeout_ms, tg_kind kind, double max_ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/%s", fault_mode_name(mode));
    const char *paths[] = {path};
    tg_group *g = group_of(20000, timeout_ms, 1, paths);
    double ms = run(g);
    const tg_result *r = tg_group_result(g, 0);
    show(fault_mode_name(mode), r, ms);
    assert_int_equal(r->state, TG_FAILED);
    if (r->kind != kind)
        fail_msg("%s: kind %s, want %s (\"%s\")", fault_mode_name(mode), tg_kind_name(r->kind),
                 tg_kind_name(kind), r->message);
    assert_true(strlen(r->message) > 0);
    assert_int_equal(tg_group_failures(g), 1);
    if (ms > max_ms)
        fail_msg("%s took %.1f ms, bound %.1f", fault_mode_name(mode), ms, max_ms);
    return g;
}

/* The resident set, or a peak of it, in KiB from /proc/self/status ("VmRSS", "VmHWM"); -1. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t flen = strlen(field);
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kib = strtol(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kib;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so the next VmHWM is this test's own peak. */
static int reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f == NULL)
        return -1;
    int rc = fputs("5", f) >= 0 ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* ---- lib/tg against the fault server -----------------------------------------------------------
 */

static void test_reset_mid_answer_is_transport(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_RESET_MID_ANSWER, 5000, TG_TRANSPORT, 3000);
    /* The status line came before the RST, so libcurl may have parsed it: 0 or 200. */
    long st = tg_group_result(g, 0)->http_status;
    assert_true(st == 0 || st == 200);
    assert_null(tg_group_result(g, 0)->body);
    tg_group_free(g);
}

static void test_truncated_body_is_transport(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_TRUNCATED_BODY, 5000, TG_TRANSPORT, 3000);
    assert_null(tg_group_result(g, 0)->body);
    tg_group_free(g);
}

/* 100 MB declared and streamed against a 1 MiB limit: invalid_response as soon as the limit is
 * passed, the connection is dropped (the server sees it), and memory does not follow the body. */
static void test_huge_body_is_invalid_fast_and_bounded(void **state)
{
    (void)state;
    long rss_before = status_kib("VmRSS");
    int have_peak = reset_peak_rss() == 0;
    tg_group *g = expect_fault(FAULT_HUGE_BODY, 20000, TG_INVALID_RESPONSE, 3000);
    long rss_after = status_kib("VmRSS");
    long peak = have_peak ? status_kib("VmHWM") : rss_after;
    if (verbose())
        print_message("  huge_body: VmRSS %ld -> %ld KiB, peak %ld KiB\n", rss_before, rss_after,
                      peak);
    assert_true(rss_before > 0 && peak > 0);
    /* 1 MiB kept, a few MiB of allocator slack; 100 MB buffered would be ~97,000 KiB */
    if (peak - rss_before > 32 * 1024)
        fail_msg("RSS grew by %ld KiB during a capped 100 MB answer", peak - rss_before);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->http_status, 200);
    assert_null(r->body);
    assert_non_null(strstr(r->message, "larger than 1048576"));
    /* the abort reached the server: it stopped streaming because the client closed */
    assert_int_equal(fault_wait_closed_early(fx.up, 1, 5000), 0);
    tg_group_free(g);
}

static void test_wrong_length_short_is_invalid(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_WRONG_LENGTH_SHORT, 5000, TG_INVALID_RESPONSE, 3000);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->http_status, 200); /* 2 bytes `{"` : not a JSON object */
    assert_null(r->body);
    assert_non_null(strstr(r->message, "without a JSON object"));
    tg_group_free(g);
}

static void test_wrong_length_long_times_out(void **state)
{
    (void)state;
    double t0 = proc_now_ms();
    tg_group *g = expect_fault(FAULT_WRONG_LENGTH_LONG, 500, TG_TIMEOUT, 4000);
    double ms = proc_now_ms() - t0;
    const tg_result *r = tg_group_result(g, 0);
    assert_true(ms >= 450);
    assert_true(r->elapsed_ms >= 450);
    assert_non_null(strstr(r->message, "within 500 ms"));
    assert_int_equal(fault_wait_closed_early(fx.up, 1, 3000), 0);
    tg_group_free(g);
}

static void test_never_answers_times_out_and_closes(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_NEVER_ANSWERS, 500, TG_TIMEOUT, 4000);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->http_status, 0);
    assert_true(r->elapsed_ms >= 450);
    assert_non_null(strstr(r->message, "within 500 ms"));
    /* the timeout aborted the transfer and closed its socket, not just forgot about it */
    assert_int_equal(fault_wait_closed_early(fx.up, 1, 3000), 0);
    tg_group_free(g);
}

/* "An answer that is not HTTP" is invalid_response in lib/tg's classification: libcurl 7.88
 * reports a bad status line as CURLE_WEIRD_SERVER_REPLY and bytes without a status line as
 * CURLE_UNSUPPORTED_PROTOCOL (HTTP/0.9 refused), both mapped to invalid_response. */
static void test_garbage_is_invalid(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_GARBAGE_STATUS, 5000, TG_INVALID_RESPONSE, 3000);
    assert_int_equal(tg_group_result(g, 0)->http_status, 0);
    tg_group_free(g);
    g = expect_fault(FAULT_GARBAGE_BYTES, 5000, TG_INVALID_RESPONSE, 3000);
    assert_int_equal(tg_group_result(g, 0)->http_status, 0);
    tg_group_free(g);
}

/* The whole answer trickles in over ~1.1 s: inside a 5 s timeout it is an ordinary success; past a
 * 500 ms one it is a timeout (timeout_ms bounds the whole call, not the silence between bytes). */
static void test_slow_trickle(void **state)
{
    (void)state;
    const char *paths[] = {"/slow_trickle"};
    tg_group *g = group_of(20000, 5000, 1, paths);
    double ms = run(g);
    const tg_result *r = tg_group_result(g, 0);
    show("slow_trickle (5 s)", r, ms);
    assert_int_equal(r->state, TG_OK);
    assert_int_equal(r->http_status, 200);
    assert_true(json_is_true(json_object_get(r->body, "ok")));
    assert_true(r->elapsed_ms >= FAULT_TRICKLE_MS * (FAULT_TRICKLE_LEN - 1));
    tg_group_free(g);

    g = expect_fault(FAULT_SLOW_TRICKLE, 500, TG_TIMEOUT, 4000);
    assert_int_equal(fault_wait_closed_early(fx.up, 1, 3000), 0);
    tg_group_free(g);
}

/* A fast 409 next to a call that never answers: the group ends at the 409 as rejected, the other
 * call is cancelled, and the server sees its connection close long before any timeout. */
static void test_rejection_cancels_never_answering_call(void **state)
{
    (void)state;
    const char *paths[] = {"/never_answers", "/reject"};
    tg_group *g = group_of(20000, 10000, 2, paths);
    double ms = run(g);
    assert_true(ms < 3000);
    assert_int_equal(tg_group_failures(g), 1);
    const tg_result *r = tg_group_result(g, 1);
    assert_int_equal(r->state, TG_FAILED);
    assert_int_equal(r->kind, TG_REJECTED);
    assert_int_equal(r->http_status, 409);
    assert_string_equal(json_string_value(json_object_get(r->body, "error")), "out_of_stock");
    assert_int_equal(tg_group_result(g, 0)->state, TG_CANCELLED);
    double t0 = proc_now_ms();
    assert_int_equal(fault_wait_closed_early(fx.up, 1, 3000), 0);
    if (verbose())
        print_message("  reject + never_answers: group %.1f ms, close seen %.1f ms after\n", ms,
                      proc_now_ms() - t0);
    tg_group_free(g);
}

/* Submits n groups of ncalls calls to path at once and waits for all. groups[] gets them. */
static void run_many(tg_group **groups, size_t n, size_t ncalls, const char *path, long timeout_ms)
{
    const char *paths[TG_MAX_CALLS];
    for (size_t i = 0; i < ncalls; i++)
        paths[i] = path;
    int before = done_count();
    for (size_t i = 0; i < n; i++) {
        groups[i] = group_of(20000, timeout_ms, ncalls, paths);
        assert_int_equal(tg_submit(fx.loop, groups[i]), 0);
    }
    assert_int_equal(wait_done(before + (int)n, 20000), 0);
}

/* Every call of every group answered 200 by the server at path (not another request's answer). */
static void assert_all_ok(tg_group **groups, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < tg_group_size(groups[i]); k++) {
            const tg_result *r = tg_group_result(groups[i], k);
            if (r->state != TG_OK)
                fail_msg("group %zu call %zu: state %d kind %s \"%s\"", i, k, r->state,
                         tg_kind_name(r->kind), r->message);
            assert_string_equal(json_string_value(json_object_get(r->body, "path")), path);
        }
    }
}

static void free_all(tg_group **groups, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tg_group_free(groups[i]);
}

/* The upstream is stopped while groups are in flight and a new one starts on the same port: the
 * groups cut off end as transport (never as a wrong success), the kept-alive connections to the
 * old server are not used for a wrong answer, and new groups all succeed on reused connections. */
static void test_restarted_under_load(void **state)
{
    (void)state;
    tg_group *groups[LOAD_GROUPS];
    int port = fault_port(fx.up);

    run_many(groups, LOAD_GROUPS, 3, "/ok", 5000); /* warm: the connection cache fills */
    assert_all_ok(groups, LOAD_GROUPS, "/ok");
    free_all(groups, LOAD_GROUPS);

    unsigned before = fault_requests(fx.up);
    int done_before = done_count();
    for (size_t i = 0; i < INFLIGHT_GROUPS; i++) {
        /* head and 12 of 50 bytes at once, then silence: cut by the stop whatever the timing */
        const char *paths[] = {"/wrong_length_long"};
        groups[i] = group_of(20000, 10000, 1, paths);
        assert_int_equal(tg_submit(fx.loop, groups[i]), 0);
    }
    assert_int_equal(fault_wait_requests(fx.up, before + INFLIGHT_GROUPS, 5000), 0);
    double t0 = proc_now_ms();
    fault_stop(fx.up);
    fx.up = fault_start(port);
    assert_non_null(fx.up);
    assert_int_equal(fault_port(fx.up), port);
    if (verbose())
        print_message("  restart: stop + start took %.1f ms\n", proc_now_ms() - t0);
    assert_int_equal(wait_done(done_before + INFLIGHT_GROUPS, 10000), 0);
    for (size_t i = 0; i < INFLIGHT_GROUPS; i++) {
        const tg_result *r = tg_group_result(groups[i], 0);
        show("cut by the restart", r, r->elapsed_ms);
        assert_int_equal(r->state, TG_FAILED);
        assert_int_equal(r->kind, TG_TRANSPORT);
    }
    free_all(groups, INFLIGHT_GROUPS);

    run_many(groups, LOAD_GROUPS, 3, "/ok", 5000); /* under load again, on the new server */
    assert_all_ok(groups, LOAD_GROUPS, "/ok");
    free_all(groups, LOAD_GROUPS);

    /* and connections are reused again: 10 calls one after the other, at most one new connection
     */
    unsigned accepted = fault_accepted(fx.up), requests = fault_requests(fx.up);
    for (int i = 0; i < 10; i++) {
        run_many(groups, 1, 1, "/ok", 5000);
        assert_all_ok(groups, 1, "/ok");
        free_all(groups, 1);
    }
    assert_int_equal(fault_requests(fx.up) - requests, 10);
    assert_true(fault_accepted(fx.up) - accepted <= 1);
}

/* A kept-alive connection the server dropped is only found dead after the request was sent on
 * it: libcurl must retry on a new connection (nothing came back, so nothing was answered), and the
 * call succeeds with the right answer. Every call after the first costs a retry: two requests read
 * and one connection accepted per call. */
static void test_stale_kept_alive_connection_is_retried(void **state)
{
    (void)state;
    tg_group *groups[1];
    for (int i = 0; i < 5; i++) {
        run_many(groups, 1, 1, "/close_on_reuse", 5000);
        assert_all_ok(groups, 1, "/close_on_reuse");
        free_all(groups, 1);
    }
    if (verbose())
        print_message("  close_on_reuse: 5 calls, %u requests read, %u connections\n",
                      fault_requests(fx.up), fault_accepted(fx.up));
    assert_int_equal(fault_accepted(fx.up), 5);
    assert_int_equal(fault_requests(fx.up), 9);
}

/* ---- regressions of two bugs these tests found in lib/ (fixed) ------------------------------ */

/* Was a bug (lib/tg.c call_classify): the bytes of an answer that never completed are parsed as
 * the upstream's body. Content-Length: 50 and then `{"ok":true}\n` (12 bytes) until the timeout:
 * the result is kind timeout (right) with body {"ok":true} (wrong: that is a prefix of a body that
 * never came), so checkoutd's error entry says "upstream":{"ok":true}. Expected: body NULL, raw
 * NULL, "upstream":null for every transport or timeout failure. */
static void test_partial_body_not_kept_on_timeout(void **state)
{
    (void)state;
    tg_group *g = expect_fault(FAULT_WRONG_LENGTH_LONG, 500, TG_TIMEOUT, 4000);
    const tg_result *r = tg_group_result(g, 0);
    int bug = r->body != NULL || r->raw != NULL || r->http_status != 0;
    tg_group_free(g);
    if (bug)
        fail_msg("a timed-out, incomplete answer keeps its partial body as the upstream's JSON");
}

/* Was a bug (lib/eg.c build): in a non-200 answer, a validation that completed still gets a
 * placeholder slot for its raw body (results is only written for a 200), so splice never finds
 * that placeholder and returns NULL, and eg_build falls back to the jansson-printed answer:
 * elapsed_ms comes out as 53.200000000000003 instead of 53.2, and the upstream body of an error is
 * re-printed (1.50 becomes 1.5), against the README's "byte for byte" and 0.1 ms rounding. Every
 * failed checkout in which another validation completed is affected (e.g. all the 502s of
 * test_checkoutd_maps_payment_faults, built twice each). */
static void test_error_group_byte_for_byte(void **state)
{
    (void)state;
    static const char ok_body[] = "{\"valid\":true}";
    static const char rejected[] = "{\"error\":\"out_of_stock\",\"price\":1.50}";
    const char *names[] = {"address", "inventory"};
    tg_group *g = tg_group_new(2, 1000, on_done, NULL);
    eg_answer a;
    assert_non_null(g);
    tg_call_record(g, 0, 0, 200, ok_body, strlen(ok_body), 0, NULL);
    tg_call_record(g, 1, 0, 409, rejected, strlen(rejected), 0, NULL);
    assert_int_equal(eg_build(g, names, "ord-b", 53.2, &a), 0);
    assert_int_equal(a.http_status, 422);
    json_t *doc = json_loads(a.body, 0, NULL);
    assert_non_null(doc); /* valid JSON either way */
    json_decref(doc);
    int bug = strstr(a.body, rejected) == NULL || strstr(a.body, "\"elapsed_ms\":53.2}") == NULL;
    if (verbose())
        print_message("  422 with one completed validation: %s\n", a.body);
    free(a.body);
    tg_group_free(g);
    if (bug)
        fail_msg("a failed group with a completed validation falls back to re-printed JSON "
                 "(1.50 -> 1.5, 53.2 -> 53.200000000000003)");
}

/* ---- checkoutd with its payment upstream at the fault server ---------------------------------
 */

static const char *const roles[] = {"address", "inventory", "payment"};

static const char order[] =
    "{\"order_id\": \"ord-f1\", \"address\": {\"postal_code\": \"1\", \"country\": \"US\"}, "
    "\"items\": [{\"sku\": \"SKU-1\", \"quantity\": 1}], \"payment\": {\"token\": \"tok_visa\"}}";

#define PAYMENT_TIMEOUT_MS 2500 /* the trickle (~1.1 s) fits; never_answers costs this much */

typedef struct daemon_world {
    proc upstreams, daemon;
    int up_port[3];
    int port;
    char config_path[64];
} daemon_world;

static void daemon_start(daemon_world *w, int fault_port_no)
{
    memset(w, 0, sizeof(*w));
    assert_int_equal(proc_start_upstreams(&w->upstreams, NULL, "/dev/null", w->up_port), 0);
    snprintf(w->config_path, sizeof(w->config_path), "/tmp/checkoutd-faults-%d.json",
             (int)getpid());
    FILE *f = fopen(w->config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 8000, \"validations\": ["
            "{\"name\": \"address\", \"field\": \"address\", \"url\": \"http://127.0.0.1:%d/a\", "
            "\"timeout_ms\": 5000},"
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": \"http://127.0.0.1:%d/i\", "
            "\"timeout_ms\": 5000},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://127.0.0.1:%d/p\", "
            "\"timeout_ms\": %d}]}\n",
            w->up_port[0], w->up_port[1], w->up_port[2], PAYMENT_TIMEOUT_MS);
    fclose(f);
    /* The payment URL is the environment override's job: the file names the fake payment. */
    char payment_env[96];
    snprintf(payment_env, sizeof(payment_env), "CHECKOUTD_PAYMENT_URL=http://127.0.0.1:%d/verify",
             fault_port_no);
    char *env[] = {payment_env, NULL};
    w->port = proc_start_checkoutd(&w->daemon, w->config_path, NULL, env, "/dev/null");
    assert_true(w->port > 0);
}

static void daemon_world_stop(daemon_world *w)
{
    proc_stop(&w->daemon);
    proc_stop(&w->upstreams);
    unlink(w->config_path);
}

/* 1 when name is a string in the JSON array arr. */
static int array_has(const json_t *arr, const char *name)
{
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (s != NULL && strcmp(s, name) == 0)
            return 1;
    }
    return 0;
}

/* POSTs the order with the fault server in mode; checks status and that payment is the one error
 * of the group with kind, address and inventory each completed or cancelled. */
static void expect_checkout(const daemon_world *w, fault_mode mode, long status, const char *kind,
                            double max_ms)
{
    static const char *const json_only[] = {"Content-Type: application/json", NULL};
    char url[64];
    http_reply r;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/checkout", w->port);
    fault_set_mode(fx.up, mode);
    http_request("POST", url, json_only, order, strlen(order), 20000, &r);
    if (verbose())
        print_message("  checkoutd %-18s HTTP %ld %7.1f ms %s\n", fault_mode_name(mode), r.status,
                      r.elapsed_ms, r.body != NULL ? r.body : "");
    if (r.status != status)
        fail_msg("%s: HTTP %ld, want %ld: %s", fault_mode_name(mode), r.status, status,
                 r.body != NULL ? r.body : "");
    assert_non_null(r.json);
    if (r.elapsed_ms > max_ms)
        fail_msg("%s took %.1f ms, bound %.1f", fault_mode_name(mode), r.elapsed_ms, max_ms);
    if (status == 200) {
        assert_string_equal(json_string_value(json_object_get(r.json, "status")), "accepted");
        assert_true(json_is_true(
            json_object_get(json_object_get(json_object_get(r.json, "results"), "payment"), "ok")));
        http_reply_free(&r);
        return;
    }
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "failed");
    json_t *errors = json_object_get(json_object_get(r.json, "error_group"), "errors");
    assert_int_equal(json_array_size(errors), 1);
    json_t *e = json_array_get(errors, 0);
    assert_string_equal(json_string_value(json_object_get(e, "validation")), "payment");
    assert_string_equal(json_string_value(json_object_get(e, "kind")), kind);
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_true(json_is_number(json_object_get(e, "elapsed_ms")));
    json_t *completed = json_object_get(r.json, "completed");
    json_t *cancelled = json_object_get(r.json, "cancelled");
    assert_true(json_is_array(completed) && json_is_array(cancelled));
    assert_false(array_has(completed, "payment") || array_has(cancelled, "payment"));
    for (int i = 0; i < 2; i++)
        assert_int_equal(array_has(completed, roles[i]) + array_has(cancelled, roles[i]), 1);
    http_reply_free(&r);
}

static void test_checkoutd_maps_payment_faults(void **state)
{
    (void)state;
    daemon_world w;
    daemon_start(&w, fault_port(fx.up));

    expect_checkout(&w, FAULT_OK, 200, NULL, 3000);
    expect_checkout(&w, FAULT_RESET_MID_ANSWER, 502, "transport", 3000);
    expect_checkout(&w, FAULT_TRUNCATED_BODY, 502, "transport", 3000);
    expect_checkout(&w, FAULT_HUGE_BODY, 502, "invalid_response", 3000);
    expect_checkout(&w, FAULT_WRONG_LENGTH_SHORT, 502, "invalid_response", 3000);
    expect_checkout(&w, FAULT_GARBAGE_STATUS, 502, "invalid_response", 3000);
    expect_checkout(&w, FAULT_GARBAGE_BYTES, 502, "invalid_response", 3000);
    unsigned closed = fault_closed_early(fx.up);
    expect_checkout(&w, FAULT_WRONG_LENGTH_LONG, 504, "timeout", PAYMENT_TIMEOUT_MS + 4000);
    expect_checkout(&w, FAULT_NEVER_ANSWERS, 504, "timeout", PAYMENT_TIMEOUT_MS + 4000);
    /* both held connections were closed by checkoutd when their timeouts passed */
    assert_int_equal(fault_wait_closed_early(fx.up, closed + 2, 3000), 0);
    expect_checkout(&w, FAULT_SLOW_TRICKLE, 200, NULL, PAYMENT_TIMEOUT_MS + 4000);
    expect_checkout(&w, FAULT_OK, 200, NULL, 3000); /* and it recovers */

    int status = -1;
    assert_int_equal(proc_signal(&w.daemon, SIGTERM), 0);
    assert_int_equal(proc_wait_exit(&w.daemon, 10000, &status), 0);
    assert_int_equal(status, 0); /* an ASan build exits non-zero on a leak */
    daemon_world_stop(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reset_mid_answer_is_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_body_is_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_body_is_invalid_fast_and_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wrong_length_short_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_length_long_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_answers_times_out_and_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_is_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_trickle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejection_cancels_never_answering_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restarted_under_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_kept_alive_connection_is_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_checkoutd_maps_payment_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partial_body_not_kept_on_timeout, setup, teardown),
        cmocka_unit_test(test_error_group_byte_for_byte),
    };
    return cmocka_run_group_tests_name("upstream_faults", tests, NULL, NULL);
}
