/* Unit tests of lib/dns against the test DNS server (tests/support/dnsd): names resolve off the
 * caller's thread, a list is published once per change, a failing server keeps the last good
 * addresses (reported once per change), a slow name holds up no other, and the hosts file
 * answers "localhost". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dns.h"
#include "support/dnsd.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

typedef struct changes {
    pthread_mutex_t mu;
    int failed, recovered;
    char last_host[64];
} changes;

static void on_change(void *arg, const char *host, int failed, const char *error)
{
    changes *c = arg;
    pthread_mutex_lock(&c->mu);
    if (failed) {
        assert_non_null(error);
        c->failed++;
    } else {
        c->recovered++;
    }
    snprintf(c->last_host, sizeof c->last_host, "%s", host);
    pthread_mutex_unlock(&c->mu);
}

static int count(changes *c, int failed)
{
    pthread_mutex_lock(&c->mu);
    int n = failed ? c->failed : c->recovered;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct fixture {
    dnsd *server;
    dns *d;
    changes ch;
} fixture;

static dns *start(fixture *f, long refresh_ms, long timeout_ms)
{
    char servers[64], err[200];
    snprintf(servers, sizeof servers, "127.0.0.1:%d", dnsd_port(f->server));
    dns_options o = {.servers = servers,
                     .refresh_ms = refresh_ms,
                     .timeout_ms = timeout_ms,
                     .on_change = on_change,
                     .arg = &f->ch};
    f->d = dns_new(&o, err, sizeof err);
    assert_non_null(f->d);
    return f->d;
}

static int setup(void **state)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.ch.mu, NULL);
    f.server = dnsd_start();
    assert_non_null(f.server);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    dns_free(f->d);
    dnsd_stop(f->server);
    pthread_mutex_destroy(&f->ch.mu);
    return 0;
}

/* Polls h until its list has n addresses and the first is first (NULL: any); 0 or -1. */
static int wait_list(const dns_host *h, dns_addrs *a, size_t n, const char *first, long ms)
{
    for (long waited = 0; waited <= ms; waited += 10) {
        dns_snapshot(h, a);
        if (a->n == n && (first == NULL || strcmp(a->addr[0], first) == 0))
            return 0;
        sleep_ms(10);
    }
    return -1;
}

static void test_literals(void **state)
{
    (void)state;
    assert_true(dns_is_literal("127.0.0.1"));
    assert_true(dns_is_literal("::1"));
    assert_true(dns_is_literal("[fd00::7]"));
    assert_false(dns_is_literal("localhost"));
    assert_false(dns_is_literal("10.0.0"));
    assert_false(dns_is_literal("pay.test"));
}

static void test_resolves_and_publishes_once_per_change(void **state)
{
    fixture *f = *state;
    dnsd_set(f->server, "pay.test", "127.0.0.3,127.0.0.2,::1");
    dns *d = start(f, 100, 500);
    assert_null(dns_add(d, "127.0.0.1")); /* a literal is no host */
    dns_host *h = dns_add(d, "pay.test");
    assert_non_null(h);
    assert_ptr_equal(dns_add(d, "PAY.test"), h);
    assert_ptr_equal(dns_find(d, "pay.test"), h);
    assert_int_equal(dns_count(d), 1);
    assert_false(dns_resolved(h));
    assert_false(dns_all_resolved(d));
    assert_int_equal(dns_start(d), 0);
    dns_addrs a;
    memset(&a, 0, sizeof a);
    assert_int_equal(wait_list(h, &a, 3, NULL, 3000), 0);
    assert_true(dns_all_resolved(d));
    /* sorted, IPv4 first */
    assert_string_equal(a.addr[0], "127.0.0.2");
    assert_string_equal(a.addr[1], "127.0.0.3");
    assert_string_equal(a.addr[2], "::1");
    uint64_t gen = a.generation;
    assert_true(gen != 0);
    /* refreshes with the same answer publish nothing new */
    unsigned q = dnsd_queries(f->server, "pay.test");
    sleep_ms(450);
    assert_true(dnsd_queries(f->server, "pay.test") > q + 2); /* A and AAAA each refresh */
    assert_int_equal(dns_snapshot(h, &a), 0);
    assert_true(a.generation == gen);
    /* a change is followed within a refresh or two */
    dnsd_set(f->server, "pay.test", "127.0.0.9");
    assert_int_equal(wait_list(h, &a, 1, "127.0.0.9", 1000), 0);
    assert_true(a.generation > gen);
    dns_stats st;
    dns_host_stats(h, &st);
    assert_true(st.lookups_ok >= 3);
    assert_int_equal(st.lookups_failed, 0);
    assert_int_equal(st.failing, 0);
    assert_true(st.last_ok_ms > 0 && dns_now_ms() - st.last_ok_ms < 1000);
    assert_int_equal(count(&f->ch, 1), 0);
}

/* Every kind of failure keeps the last good list; failed/recovered are reported once each. */
static void test_stale_on_failure(void **state)
{
    fixture *f = *state;
    dnsd_set(f->server, "inv.test", "127.0.0.2,127.0.0.3");
    dns *d = start(f, 50, 100);
    dns_host *h = dns_add(d, "inv.test");
    assert_int_equal(dns_start(d), 0);
    dns_addrs a;
    memset(&a, 0, sizeof a);
    assert_int_equal(wait_list(h, &a, 2, "127.0.0.2", 3000), 0);
    const dnsd_mode modes[] = {DNSD_SERVFAIL, DNSD_NXDOMAIN, DNSD_DROP};
    for (size_t m = 0; m < 3; m++) {
        dns_stats before;
        dns_host_stats(h, &before);
        dnsd_behave(f->server, "inv.test", modes[m], 0);
        for (int i = 0; i < 10; i++) { /* 10 refreshes (each a failure) */
            sleep_ms(60);
            dns_addrs b;
            memset(&b, 0, sizeof b);
            assert_int_equal(dns_snapshot(h, &b), 1);
            assert_int_equal(b.n, 2);
            assert_string_equal(b.addr[1], "127.0.0.3");
        }
        dns_stats st;
        dns_host_stats(h, &st);
        assert_true(st.failing);
        assert_true(st.lookups_failed >= before.lookups_failed + 3);
        assert_int_equal(count(&f->ch, 1), (int)m + 1); /* once per change */
        dnsd_behave(f->server, "inv.test", DNSD_ANSWER, 0);
        for (int i = 0; i < 300 && count(&f->ch, 0) < (int)m + 1; i++)
            sleep_ms(10);
        assert_int_equal(count(&f->ch, 0), (int)m + 1);
        sleep_ms(150);
        assert_int_equal(count(&f->ch, 0), (int)m + 1);
    }
    assert_string_equal(f->ch.last_host, "inv.test");
}

/* A name whose server takes 3 s holds up neither the other names nor the caller. */
static void test_slow_name_holds_up_nothing(void **state)
{
    fixture *f = *state;
    dnsd_set(f->server, "slow.test", "127.0.0.2");
    dnsd_behave(f->server, "slow.test", DNSD_ANSWER, 3000);
    dnsd_set(f->server, "fast.test", "127.0.0.3");
    dns *d = start(f, 100, 5000);
    dns_host *slow = dns_add(d, "slow.test"), *fast = dns_add(d, "fast.test");
    int64_t t0 = dns_now_ms();
    assert_int_equal(dns_start(d), 0);
    dns_addrs a;
    memset(&a, 0, sizeof a);
    assert_int_equal(wait_list(fast, &a, 1, "127.0.0.3", 1500), 0);
    assert_true(dns_now_ms() - t0 < 1500);
    assert_false(dns_resolved(slow));
    assert_false(dns_all_resolved(d));
    /* one lookup at a time per host: refreshes do not pile queries up */
    assert_true(dnsd_queries(f->server, "slow.test") <= 2);
    memset(&a, 0, sizeof a);
    assert_int_equal(wait_list(slow, &a, 1, "127.0.0.2", 6000), 0);
    assert_true(dns_all_resolved(d));
}

/* A name added after the start is looked up at once; localhost comes from the hosts file even
 * with a server that knows nothing (dnsd answers NXDOMAIN for it). */
static void test_added_later_and_localhost(void **state)
{
    fixture *f = *state;
    dns *d = start(f, 5000, 500);
    assert_int_equal(dns_start(d), 0);
    dns_host *h = dns_add(d, "localhost");
    assert_non_null(h);
    dns_addrs a;
    memset(&a, 0, sizeof a);
    for (int i = 0; i < 300 && a.n == 0; i++) {
        sleep_ms(10);
        dns_snapshot(h, &a);
    }
    assert_true(a.n >= 1);
    assert_true(strcmp(a.addr[0], "127.0.0.1") == 0 || strcmp(a.addr[0], "::1") == 0);
    /* never resolved: NXDOMAIN from the start */
    dns_host *none = dns_add(d, "none.test");
    sleep_ms(300);
    assert_false(dns_resolved(none));
    dns_stats st;
    dns_host_stats(none, &st);
    assert_true(st.failing);
    assert_int_equal(st.last_ok_ms, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literals),
        cmocka_unit_test_setup_teardown(test_resolves_and_publishes_once_per_change, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_on_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_name_holds_up_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_added_later_and_localhost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
