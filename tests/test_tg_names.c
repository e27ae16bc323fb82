/* lib/tg with the resolver (tg_loop_options.names, contract v1.3 "Names"): transfers connect to
 * the addresses lib/dns published, spread over them, move on to the next address when one
 * refuses (within the same attempt), fail at once while a name has never resolved — and no
 * thread of the process ever calls getaddrinfo for them: this binary defines getaddrinfo itself
 * (it takes the place of libc's for libcurl too: the executable comes first in symbol lookup),
 * counts every call and forwards it. The control shows the count does move when libcurl resolves
 * a name itself (a loop without the resolver). */
#include "support/dnsd.h"
#include "support/proc.h"
#include "support/stub.h"

#include "dns.h"
#include "tg.h"

#include <dlfcn.h>
#include <netdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

static atomic_int gai_calls;

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    atomic_fetch_add(&gai_calls, 1);
    gai_fn real = (gai_fn)(uintptr_t)dlsym(RTLD_NEXT, "getaddrinfo");
    return real != NULL ? real(node, service, hints, res) : EAI_FAIL;
}

typedef struct fixture {
    dnsd *server;
    dns *names;
    stub *s2, *s3;
    tg_loop *loop;
    int done;
} fixture;

static fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof fx);
    fx.server = dnsd_start();
    fx.s2 = stub_start_at("127.0.0.2", 0);
    fx.s3 = fx.s2 ? stub_start_at("127.0.0.3", stub_port(fx.s2)) : NULL;
    if (fx.server == NULL || fx.s3 == NULL)
        return -1;
    char servers[64], err[200];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", dnsd_port(fx.server));
    dns_options o = {.servers = servers, .refresh_ms = 100, .timeout_ms = 1000};
    fx.names = dns_new(&o, err, sizeof err);
    if (fx.names == NULL || dns_start(fx.names) != 0)
        return -1;
    tg_loop_options lo = {.max_body_bytes = 4096, .names = fx.names};
    fx.loop = tg_loop_new(&lo);
    return fx.loop ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tg_loop_free(fx.loop);
    dns_free(fx.names);
    stub_stop(fx.s2);
    stub_stop(fx.s3);
    dnsd_stop(fx.server);
    return 0;
}

static void on_done(tg_group *g, void *user)
{
    (void)g;
    (*(int *)user)++;
}

/* One group of the given URLs (traced when trace), run by hand on this thread until done (at
 * most 10 s). */
static tg_group *run_traced(tg_loop *loop, size_t n, const char *const urls[], int trace)
{
    int done = 0;
    tg_group *g = tg_group_new(n, 5000, on_done, &done);
    assert_non_null(g);
    if (trace)
        assert_int_equal(tg_group_trace(g), 0);
    for (size_t i = 0; i < n; i++) {
        char *body = strdup("{\"order_id\":\"o-1\"}");
        assert_int_equal(tg_call_set(g, i, urls[i], body, strlen(body), NULL, 3000), 0);
    }
    assert_int_equal(tg_submit(loop, g), 0);
    double until = proc_now_ms() + 10000;
    while (!done && proc_now_ms() < until)
        tg_loop_run_once(loop, 50);
    assert_true(done);
    return g;
}

static tg_group *run(tg_loop *loop, size_t n, const char *const urls[])
{
    return run_traced(loop, n, urls, 0);
}

static void wait_resolved(const char *name)
{
    dns_host *h = dns_add(fx.names, name);
    for (int i = 0; i < 500 && !dns_resolved(h); i++) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    assert_true(dns_resolved(h));
}

/* Both addresses get requests; a sibling's failure cancels transfers on names; no getaddrinfo. */
static void test_spread_and_no_getaddrinfo(void **state)
{
    (void)state;
    dnsd_set(fx.server, "pay.test", "127.0.0.2,127.0.0.3");
    wait_resolved("pay.test");
    int before = atomic_load(&gai_calls);
    char ok[128], slow[128], refuse[128];
    snprintf(ok, sizeof ok, "http://pay.test:%d/p", stub_port(fx.s2));
    snprintf(slow, sizeof slow, "http://pay.test:%d/p?delay_ms=500", stub_port(fx.s2));
    snprintf(refuse, sizeof refuse, "http://pay.test:%d/i?status=409&delay_ms=20",
             stub_port(fx.s2));
    for (int i = 0; i < 10; i++) {
        const char *urls[] = {ok};
        tg_group *g = run(fx.loop, 1, urls);
        assert_int_equal(tg_group_result(g, 0)->state, TG_OK);
        tg_group_free(g);
    }
    assert_true(stub_requests(fx.s2) >= 3);
    assert_true(stub_requests(fx.s3) >= 3);
    for (int i = 0; i < 5; i++) { /* the slow one is cancelled by the refusal */
        const char *urls[] = {slow, refuse};
        tg_group *g = run(fx.loop, 2, urls);
        assert_int_equal(tg_group_result(g, 0)->state, TG_CANCELLED);
        assert_int_equal(tg_group_result(g, 1)->kind, TG_REJECTED);
        tg_group_free(g);
    }
    assert_int_equal(atomic_load(&gai_calls) - before, 0);
}

/* One of two addresses refuses (nothing listens on 127.0.0.4): every call still succeeds, in
 * one attempt — the refused connection moved on to the next address. */
static void test_refused_address_moves_on(void **state)
{
    (void)state;
    dnsd_set(fx.server, "two.test", "127.0.0.4,127.0.0.2");
    wait_resolved("two.test");
    char url[128];
    snprintf(url, sizeof url, "http://two.test:%d/p", stub_port(fx.s2));
    for (int i = 0; i < 6; i++) {
        const char *urls[] = {url};
        tg_group *g = run(fx.loop, 1, urls);
        const tg_result *r = tg_group_result(g, 0);
        assert_int_equal(r->state, TG_OK);
        assert_int_equal(r->attempts, 1);
        tg_group_free(g);
    }
    assert_int_equal(stub_requests(fx.s2), 6);
    /* after the rest: a traced request that starts on the refusing address shows both transfers,
     * the refused one as a transport failure */
    struct timespec rest = {1, 200 * 1000000L};
    nanosleep(&rest, NULL);
    int both = 0;
    for (int i = 0; i < 2; i++) {
        const char *urls[] = {url};
        tg_group *g = run_traced(fx.loop, 1, urls, 1);
        const tg_attempt *a = NULL;
        size_t n = tg_call_attempts(g, 0, &a);
        assert_int_equal(tg_group_result(g, 0)->attempts, 1);
        if (n == 2) {
            assert_int_equal(a[0].state, TG_FAILED);
            assert_int_equal(a[0].kind, TG_TRANSPORT);
            assert_int_equal(a[1].state, TG_OK);
            both++;
        }
        tg_group_free(g);
    }
    assert_int_equal(both, 1); /* one of two in turn starts on 127.0.0.4, then it rests again */
    /* the refusing address rests: new requests go straight to the other one (one transfer each,
     * where trying .4 first would show as a second, failed-over transfer) */
    for (int i = 0; i < 4; i++) {
        const char *urls[] = {url};
        tg_group *g = run_traced(fx.loop, 1, urls, 1);
        const tg_attempt *a = NULL;
        assert_int_equal(tg_call_attempts(g, 0, &a), 1);
        assert_int_equal(a[0].state, TG_OK);
        tg_group_free(g);
    }
}

/* A name never resolved: transport "<host>: not resolved yet" at once, attempts 0, not sent. */
static void test_not_resolved_fails_fast(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "http://none.test:%d/p", stub_port(fx.s2));
    const char *urls[] = {url};
    double t0 = proc_now_ms();
    tg_group *g = run(fx.loop, 1, urls);
    assert_true(proc_now_ms() - t0 < 500);
    const tg_result *r = tg_group_result(g, 0);
    assert_int_equal(r->state, TG_FAILED);
    assert_int_equal(r->kind, TG_TRANSPORT);
    assert_string_equal(r->message, "none.test: not resolved yet");
    assert_int_equal(r->attempts, 0);
    assert_int_equal(r->sent, 0);
    tg_group_free(g);
    assert_int_equal(stub_requests(fx.s2) + stub_requests(fx.s3), 0);
    assert_non_null(dns_find(fx.names, "none.test")); /* added to the resolver */
}

/* The control: without the resolver, libcurl resolves a hosts-file name itself, and the count
 * moves (so the zero above means something). localhost is special in libcurl (no lookup): a
 * name from /etc/hosts other than it is used; none there: skipped. */
static void test_control_libcurl_resolves_itself(void **state)
{
    (void)state;
    char name[64] = "";
    FILE *f = fopen("/etc/hosts", "r");
    char line[256];
    while (f != NULL && name[0] == '\0' && fgets(line, sizeof line, f) != NULL) {
        char addr[64], host[64];
        if (line[0] != '#' && sscanf(line, "%63s %63s", addr, host) == 2 &&
            strncmp(addr, "127.", 4) == 0 && strstr(host, "localhost") == NULL)
            snprintf(name, sizeof name, "%s", host);
    }
    if (f != NULL)
        fclose(f);
    if (name[0] == '\0')
        skip();
    tg_loop_options lo = {.max_body_bytes = 4096};
    tg_loop *plain = tg_loop_new(&lo);
    assert_non_null(plain);
    int before = atomic_load(&gai_calls);
    char url[128];
    snprintf(url, sizeof url, "http://%s:%d/p", name, stub_port(fx.s2));
    const char *urls[] = {url};
    tg_group *g = run(plain, 1, urls);
    tg_group_free(g);
    tg_loop_free(plain);
    assert_true(atomic_load(&gai_calls) - before >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spread_and_no_getaddrinfo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_address_moves_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_resolved_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_control_libcurl_resolves_itself, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
