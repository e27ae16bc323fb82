/* Names (contract v1.3) against a real checkoutd: its upstreams are reached by name through the
 * test DNS server (tests/support/dnsd, pointed to by dns.servers), the names' addresses are stubs
 * on 127.0.0.2 and 127.0.0.3 sharing one port (the whole 127/8 is local). A slow or failing DNS
 * never holds up or fails a checkout whose upstreams are alive; a name never resolved fails fast
 * and keeps /readyz at 503; several addresses share the load and cover for each other; a changed
 * address is followed and the old one's connections are not reused. Bounds are generous: the
 * machine is shared and the tests also run under ASan and TSan. */
#include "support/dnsd.h"
#include "support/http.h"
#include "support/proc.h"
#include "support/prom.h"
#include "support/stub.h"

#include <jansson.h>
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

static const char order[] = "{\"order_id\": \"ord-n1\", \"items\": [{\"sku\": \"a\", \"qty\": 1}], "
                            "\"payment\": {\"token\": \"tok_visa\"}}";

#define REFRESH_MS 100

typedef struct world {
    dnsd *dns;
    stub *s2, *s3, *inv; /* pay.test's two addresses; inventory on 127.0.0.1 */
    proc daemon;
    int port;
    char config_path[64];
} world;

static world W;
static long dns_timeout_ms = 5000;
static char top_extra[256]; /* more top-level members of the config (", \"idempotency\": ...") */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    dns_timeout_ms = 5000;
    top_extra[0] = '\0';
    W.dns = dnsd_start();
    W.s2 = stub_start_at("127.0.0.2", 0);
    W.s3 = W.s2 ? stub_start_at("127.0.0.3", stub_port(W.s2)) : NULL;
    W.inv = stub_start();
    return W.dns && W.s2 && W.s3 && W.inv ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_stop(&W.daemon);
    if (W.config_path[0])
        unlink(W.config_path);
    stub_stop(W.s2);
    stub_stop(W.s3);
    stub_stop(W.inv);
    dnsd_stop(W.dns);
    return 0;
}

/* checkoutd with two workers: payment at http://pay.test:<stubs' port>/p (pay_extra: more
 * members), inventory at http://127.0.0.1:<inv>/i<inv_query>; dns.timeout_ms dns_timeout_ms. */
static void start(const char *inv_query, const char *pay_extra)
{
    snprintf(W.config_path, sizeof W.config_path, "/tmp/checkoutd-names-%d.json", (int)getpid());
    FILE *f = fopen(W.config_path, "w");
    assert_non_null(f);
    fprintf(f,
            "{\"listen\": \"127.0.0.1:0\", \"deadline_ms\": 5000%s,"
            " \"dns\": {\"servers\": [\"127.0.0.1:%d\"], \"refresh_ms\": %d, \"timeout_ms\": %ld},"
            " \"validations\": ["
            "{\"name\": \"inventory\", \"field\": \"items\", \"url\": "
            "\"http://127.0.0.1:%d/i%s\", \"timeout_ms\": 3000},"
            "{\"name\": \"payment\", \"field\": \"payment\", \"url\": \"http://pay.test:%d/p\","
            " \"timeout_ms\": 3000%s}]}\n",
            top_extra, dnsd_port(W.dns), REFRESH_MS, dns_timeout_ms, stub_port(W.inv), inv_query,
            stub_port(W.s2), pay_extra);
    fclose(f);
    char *env[] = {"CHECKOUTD_LOOPS=2", NULL};
    W.port = proc_start_checkoutd(&W.daemon, W.config_path, NULL, env, "/dev/null");
    assert_true(W.port > 0);
}

static void get(const char *path, http_reply *r)
{
    char url[80];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", W.port, path);
    assert_int_equal(http_request("GET", url, NULL, NULL, 0, 5000, r), 0);
}

static void checkout_keyed(http_reply *r, const char *key)
{
    char url[64], h[96];
    const char *headers[] = {"Content-Type: application/json", NULL, NULL};
    if (key != NULL) {
        snprintf(h, sizeof h, "Idempotency-Key: %s", key);
        headers[1] = h;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/checkout", W.port);
    http_request("POST", url, headers, order, strlen(order), 20000, r);
    assert_non_null(r->json);
}

static void checkout(http_reply *r)
{
    checkout_keyed(r, NULL);
}

/* Polls /readyz until it answers status; 0 or -1. */
static int wait_ready(long status, long ms)
{
    for (long waited = 0; waited <= ms; waited += 20) {
        http_reply r;
        get("/readyz", &r);
        long got = r.status;
        http_reply_free(&r);
        if (got == status)
            return 0;
        sleep_ms(20);
    }
    return -1;
}

static double metric(const char *series)
{
    http_reply r;
    double v = -1;
    get("/metrics", &r);
    char err[256];
    if (prom_check(r.body, err, sizeof err) != 0)
        fail_msg("metrics: %s", err);
    if (prom_value(r.body, series, &v) != 0)
        fail_msg("no series %s", series);
    http_reply_free(&r);
    return v;
}

static const json_t *error_of(const http_reply *r, const char *validation)
{
    const json_t *errs = json_object_get(json_object_get(r->json, "error_group"), "errors");
    for (size_t i = 0; i < json_array_size(errs); i++) {
        const json_t *e = json_array_get(errs, i);
        if (strcmp(json_string_value(json_object_get(e, "validation")), validation) == 0)
            return e;
    }
    return NULL;
}

static int in_list(const http_reply *r, const char *list, const char *name)
{
    const json_t *arr = json_object_get(r->json, list);
    for (size_t i = 0; i < json_array_size(arr); i++)
        if (strcmp(json_string_value(json_array_get(arr, i)), name) == 0)
            return 1;
    return 0;
}

/* ---- a slow DNS holds up nothing ---------------------------------------------------------- */

typedef struct load {
    int n, slow, wrong;
    double worst_ms;
    long want;
} load;

static void *checkouts(void *arg)
{
    load *l = arg;
    for (int i = 0; i < l->n; i++) {
        http_reply r;
        checkout(&r);
        if (r.status != l->want)
            l->wrong++;
        if (r.elapsed_ms > l->worst_ms)
            l->worst_ms = r.elapsed_ms;
        http_reply_free(&r);
    }
    return NULL;
}

/* pay.test resolved; then its lookups take 3 s (every refresh) while inventory refuses after
 * 50 ms: each checkout is answered 422 right after the refusal — the payment transfer it cancels
 * never waits for a lookup — on both workers, with four clients at once. */
static void test_slow_lookup_holds_up_nothing(void **state)
{
    (void)state;
    dnsd_set(W.dns, "pay.test", "127.0.0.2");
    start("?status=409&delay_ms=50", "");
    assert_int_equal(wait_ready(200, 5000), 0);
    dnsd_behave(W.dns, "pay.test", DNSD_ANSWER, 3000);
    sleep_ms(3 * REFRESH_MS); /* a slow lookup is running now */
    unsigned before = dnsd_queries(W.dns, "pay.test");
    pthread_t t[4];
    load l[4];
    double t0 = proc_now_ms();
    for (int i = 0; i < 4; i++) {
        l[i] = (load){.n = 10, .want = 422};
        assert_int_equal(pthread_create(&t[i], NULL, checkouts, &l[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(l[i].wrong, 0);
        /* 50 ms each; a lookup held up would make it 3 s */
        assert_true(l[i].worst_ms < 1500);
    }
    /* 40 checkouts in well under the 3 s of one lookup... */
    assert_true(proc_now_ms() - t0 < 2900);
    /* ...and no lookup per checkout: at most the resolver's own (one at a time, A + AAAA) */
    assert_true(dnsd_queries(W.dns, "pay.test") - before <= 4);
}

/* ---- DNS down ------------------------------------------------------------------------------ */

/* After a good lookup, the server drops, SERVFAILs and NXDOMAINs pay.test, 10 refreshes each:
 * every checkout is still accepted (the last good address), dns_failed/dns_recovered counted. */
static void test_dns_down_keeps_last_addresses(void **state)
{
    (void)state;
    dnsd_set(W.dns, "pay.test", "127.0.0.2");
    dns_timeout_ms = 50; /* a dropped question fails its lookup within a refresh */
    start("", "");
    assert_int_equal(wait_ready(200, 5000), 0);
    const dnsd_mode modes[] = {DNSD_DROP, DNSD_SERVFAIL, DNSD_NXDOMAIN};
    for (size_t m = 0; m < 3; m++) {
        dnsd_behave(W.dns, "pay.test", modes[m], 0);
        double until = proc_now_ms() + 10 * REFRESH_MS;
        int n = 0;
        while (proc_now_ms() < until || n < 5) {
            http_reply r;
            checkout(&r);
            assert_int_equal(r.status, 200);
            http_reply_free(&r);
            n++;
        }
        http_reply r;
        get("/readyz", &r);
        assert_int_equal(r.status, 200); /* stale is ready */
        http_reply_free(&r);
        dnsd_behave(W.dns, "pay.test", DNSD_ANSWER, 0);
        sleep_ms(3 * REFRESH_MS);
    }
    assert_true(metric("checkoutd_dns_lookups_total{host=\"pay.test\",outcome=\"failed\"}") >= 3);
    assert_true(metric("checkoutd_dns_lookups_total{host=\"pay.test\",outcome=\"ok\"}") >= 2);
    assert_true(metric("checkoutd_dns_addresses{host=\"pay.test\"}") == 1);
}

/* ---- never resolved ---------------------------------------------------------------------- */

/* pay.test unknown to the server: /readyz 503 naming it; a checkout fails at once with payment's
 * transport error "pay.test: not resolved yet", attempts 0, nothing sent, nothing compensated;
 * once the name resolves, /readyz is 200 and checkouts are accepted. */
static void test_never_resolved(void **state)
{
    (void)state;
    start("", ", \"compensate\": {\"url\": \"http://pay.test:1/void\"}");
    http_reply r;
    get("/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "resolving");
    assert_string_equal(json_string_value(json_array_get(json_object_get(r.json, "hosts"), 0)),
                        "pay.test");
    http_reply_free(&r);

    checkout(&r);
    assert_int_equal(r.status, 502);
    assert_true(r.elapsed_ms < 1000);
    const json_t *e = error_of(&r, "payment");
    assert_non_null(e);
    assert_string_equal(json_string_value(json_object_get(e, "kind")), "transport");
    /* "payment pay.test: not resolved yet": the answer names the validation first */
    assert_non_null(
        strstr(json_string_value(json_object_get(e, "message")), "pay.test: not resolved yet"));
    assert_int_equal(json_integer_value(json_object_get(e, "attempts")), 0);
    assert_false(in_list(&r, "compensating", "payment"));
    http_reply_free(&r);
    assert_int_equal(stub_requests(W.s2) + stub_requests(W.s3), 0);

    dnsd_set(W.dns, "pay.test", "127.0.0.3");
    assert_int_equal(wait_ready(200, 5000), 0);
    checkout(&r);
    assert_int_equal(r.status, 200);
    http_reply_free(&r);
    assert_int_equal(stub_requests(W.s3), 1);
}

/* ---- several addresses, and a change ----------------------------------------------------- */

static void accept_n(int n)
{
    for (int i = 0; i < n; i++) {
        http_reply r;
        checkout(&r);
        assert_int_equal(r.status, 200);
        http_reply_free(&r);
    }
}

/* Two addresses: both get requests; one stops listening: no checkout fails. */
static void test_two_addresses(void **state)
{
    (void)state;
    dnsd_set(W.dns, "pay.test", "127.0.0.2,127.0.0.3");
    start("", "");
    assert_int_equal(wait_ready(200, 5000), 0);
    accept_n(20);
    assert_true(stub_requests(W.s2) >= 4);
    assert_true(stub_requests(W.s3) >= 4);
    stub_stop(W.s3); /* refuses from now on; its kept-alive connections are cut */
    W.s3 = NULL;
    unsigned before = stub_requests(W.s2);
    accept_n(20);
    assert_int_equal(stub_requests(W.s2) - before, 20);
    /* the status page shows both addresses and a fresh lookup */
    http_reply r;
    get("/status.json", &r);
    const json_t *pay = json_object_get(json_object_get(r.json, "validations"), "payment");
    assert_string_equal(json_string_value(json_object_get(pay, "host")), "pay.test");
    assert_int_equal(json_array_size(json_object_get(pay, "addresses")), 2);
    assert_true(json_integer_value(json_object_get(pay, "dns_age_ms")) < 5000);
    http_reply_free(&r);
}

/* pay.test moves from 127.0.0.2 to 127.0.0.3: after a few refreshes every new request goes to
 * .3, although .2 still listens and checkoutd holds kept-alive connections to it. */
static void test_address_change_followed(void **state)
{
    (void)state;
    dnsd_set(W.dns, "pay.test", "127.0.0.2");
    start("", "");
    assert_int_equal(wait_ready(200, 5000), 0);
    accept_n(10);
    assert_int_equal(stub_requests(W.s2), 10);
    dnsd_set(W.dns, "pay.test", "127.0.0.3");
    sleep_ms(5 * REFRESH_MS);
    accept_n(10);
    assert_int_equal(stub_requests(W.s2), 10);
    assert_int_equal(stub_requests(W.s3), 10);
}

/* ---- Redis by name ------------------------------------------------------------------------ */

static int redis_ping(const char *ip, int port)
{
    char cmd[160];
    snprintf(cmd, sizeof cmd, "redis-cli -h %s -p %d ping 2>/dev/null | grep -q PONG", ip, port);
    return system(cmd) == 0 ? 0 : -1;
}

static void redis_start(proc *p, const char *ip, int port)
{
    char port_arg[16], ip_arg[32];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    snprintf(ip_arg, sizeof ip_arg, "%s", ip);
    char *argv[] = {"redis-server", "--port",     port_arg,       "--bind", ip_arg,
                    "--save",       "",           "--appendonly", "no",     "--daemonize",
                    "no",           "--loglevel", "warning",      NULL};
    assert_int_equal(proc_spawn(p, argv, NULL, "/dev/null"), 0);
    double until = proc_now_ms() + 10000;
    while (redis_ping(ip, port) != 0 && proc_now_ms() < until)
        sleep_ms(20);
    assert_int_equal(redis_ping(ip, port), 0);
}

/* The Idempotency-Key store at redis://redis.test:PORT: keyed checkouts work once the name
 * resolves; the name moves to another Redis (127.0.0.1 -> 127.0.0.2) and the first one stops:
 * the workers reconnect to the new address (a key stored on the first is new there). */
static void test_redis_by_name(void **state)
{
    (void)state;
    int port = http_free_port();
    assert_true(port > 0);
    proc r1 = {0}, r2 = {0};
    redis_start(&r1, "127.0.0.1", port);
    redis_start(&r2, "127.0.0.2", port);
    dnsd_set(W.dns, "pay.test", "127.0.0.2");
    dnsd_set(W.dns, "redis.test", "127.0.0.1");
    snprintf(top_extra, sizeof top_extra,
             ", \"idempotency\": {\"store\": \"redis\", \"redis_url\": "
             "\"redis://redis.test:%d\", \"timeout_ms\": 500}",
             port);
    start("", "");
    assert_int_equal(wait_ready(200, 5000), 0);
    http_reply r;
    long status = 0;
    for (double until = proc_now_ms() + 10000; status != 200 && proc_now_ms() < until;) {
        checkout_keyed(&r, "k-first");
        status = r.status;
        http_reply_free(&r);
        if (status != 200)
            sleep_ms(100); /* each worker connects after the name resolved (backoff 100 ms) */
    }
    assert_int_equal(status, 200);
    checkout_keyed(&r, "k-first");
    assert_non_null(http_reply_header(&r, "Idempotent-Replayed"));
    http_reply_free(&r);
    unsigned sent = stub_requests(W.s2);

    dnsd_set(W.dns, "redis.test", "127.0.0.2");
    sleep_ms(5 * REFRESH_MS);
    proc_stop(&r1); /* the connections drop; reconnects go to the current address */
    status = 0;
    for (double until = proc_now_ms() + 10000; status != 200 && proc_now_ms() < until;) {
        checkout_keyed(&r, "k-first");
        status = r.status;
        int replayed = http_reply_header(&r, "Idempotent-Replayed") != NULL;
        http_reply_free(&r);
        if (status == 200)
            assert_false(replayed); /* the second Redis never saw the key */
        else
            sleep_ms(100);
    }
    assert_int_equal(status, 200);
    assert_int_equal(stub_requests(W.s2), sent + 1);
    proc_stop(&r2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slow_lookup_holds_up_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dns_down_keeps_last_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_address_change_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_by_name, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
