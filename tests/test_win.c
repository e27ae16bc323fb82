/* win: the live view's one-second windows — bucket roll-over, merging writers, percentiles of a
 * known set, the histogram's buckets, and writers racing a reader (run under TSan by make
 * test-tsan). */
#include "win.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

static void test_counts_one_second(void **state)
{
    (void)state;
    win *w = win_new(1, 2);
    win_totals *t = win_totals_new(w);
    assert_non_null(w);
    assert_non_null(t);
    win_checkout(w, 0, 100, WIN_ACCEPTED);
    win_checkout(w, 0, 100, WIN_ACCEPTED);
    win_checkout(w, 0, 100, WIN_FAILED);
    win_call(w, 0, 100, 0, 0, 1.0);
    win_call(w, 0, 100, 0, 4, 2.0); /* transport */
    win_cancelled(w, 0, 100, 1);
    win_read(w, 100, 101, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 2);
    assert_int_equal(t->outcomes[WIN_REJECTED], 0);
    assert_int_equal(t->outcomes[WIN_FAILED], 1);
    assert_int_equal(t->series[0].calls, 2);
    assert_int_equal(t->series[0].kinds[0], 1);
    assert_int_equal(t->series[0].kinds[4], 1);
    assert_int_equal(t->series[0].cancelled, 0);
    assert_int_equal(t->series[1].calls, 0);
    assert_int_equal(t->series[1].cancelled, 1);
    /* the second is not in another range */
    win_read(w, 101, 102, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 0);
    win_read(w, 40, 100, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 0);
    /* out-of-range arguments are ignored, not a crash */
    win_call(w, 1, 100, 0, 0, 1.0);
    win_call(w, 0, 100, 2, 0, 1.0);
    win_call(w, 0, 100, 0, WIN_KINDS, 1.0);
    win_checkout(w, 0, -1, WIN_ACCEPTED);
    win_checkout(w, 0, 100, WIN_OUTCOMES);
    win_read(w, 100, 101, t);
    assert_int_equal(t->series[0].calls, 2);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 2);
    free(t);
    win_free(w);
}

/* A slot is reused WIN_SLOTS seconds later: the old second's counts are gone, not added. */
static void test_roll_over(void **state)
{
    (void)state;
    win *w = win_new(1, 1);
    win_totals *t = win_totals_new(w);
    for (int64_t sec = 1000; sec < 1000 + 3 * WIN_SLOTS; sec++)
        for (int64_t k = 0; k <= sec % 3; k++)
            win_checkout(w, 0, sec, WIN_ACCEPTED);
    int64_t now = 1000 + 3 * WIN_SLOTS; /* the last second written is now - 1 */
    uint64_t want = 0;
    for (int64_t sec = now - 60; sec < now; sec++)
        want += (uint64_t)(sec % 3 + 1);
    win_read(w, now - 60, now, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], want);
    /* one second at a time, each exactly its own */
    for (int64_t sec = now - 60; sec < now; sec++) {
        win_read(w, sec, sec + 1, t);
        assert_int_equal(t->outcomes[WIN_ACCEPTED], (uint64_t)(sec % 3 + 1));
    }
    /* seconds older than the ring holds read as empty, even though their slot is in use */
    win_read(w, now - WIN_SLOTS - 10, now - WIN_SLOTS, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 0);
    /* a range longer than WIN_MAX_SPAN is cut to its last 60 s */
    win_read(w, 0, now, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], want);
    /* a writer idle for long: its next second starts from zero */
    win_checkout(w, 0, now + 1000, WIN_REJECTED);
    win_read(w, now + 1000, now + 1001, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 0);
    assert_int_equal(t->outcomes[WIN_REJECTED], 1);
    free(t);
    win_free(w);
}

/* Three writers, each its own ring: a read adds them all up. */
static void test_merge_writers(void **state)
{
    (void)state;
    win *w = win_new(3, 2);
    win_totals *t = win_totals_new(w);
    assert_int_equal(win_writers(w), 3);
    assert_int_equal(win_nseries(w), 2);
    for (size_t k = 0; k < 3; k++) {
        for (size_t n = 0; n <= k; n++) {
            win_checkout(w, k, 500, WIN_ACCEPTED);
            win_call(w, k, 500, 1, 0, 10.0 * (double)(k + 1));
        }
        win_checkout(w, k, 501, WIN_REJECTED);
        win_call(w, k, 501, 0, 1, 1.0);
    }
    win_read(w, 500, 502, t);
    assert_int_equal(t->outcomes[WIN_ACCEPTED], 1 + 2 + 3);
    assert_int_equal(t->outcomes[WIN_REJECTED], 3);
    assert_int_equal(t->series[1].calls, 6);
    assert_int_equal(t->series[0].kinds[1], 3);
    /* the merged histogram holds every writer's latencies: 1 x 10 ms, 2 x 20 ms, 3 x 30 ms */
    assert_int_equal(t->series[1].hist[win_bucket(10.0)], 1);
    assert_int_equal(t->series[1].hist[win_bucket(20.0)], 2);
    assert_int_equal(t->series[1].hist[win_bucket(30.0)], 3);
    double p50 = win_quantile(t->series[1].hist, 0.5);
    assert_true(p50 >= 20.0 * 0.75 && p50 <= 32.0);
    free(t);
    win_free(w);
}

static void test_buckets(void **state)
{
    (void)state;
    assert_int_equal(win_bucket(0), 0);
    assert_int_equal(win_bucket(-5), 0);
    assert_int_equal(win_bucket(NAN), 0);
    assert_int_equal(win_bucket(1e9), WIN_HBUCKETS - 1);
    for (unsigned i = 0; i < WIN_HBUCKETS; i++) {
        double lo = win_bucket_low(i), hi = win_bucket_low(i + 1);
        assert_true(hi > lo);
        assert_true(hi / lo <= 1.25 + 1e-12); /* 4 buckets a doubling: at most 25 % wide */
        assert_int_equal(win_bucket(lo), i);
        assert_int_equal(win_bucket((lo + hi) / 2), i);
        assert_int_equal(win_bucket(hi * (1 - 1e-12)), i);
    }
    assert_true(fabs(win_bucket_low(0) - 1.0 / 32) < 1e-12);
    assert_true(fabs(win_bucket_low(WIN_HBUCKETS) - 65536.0) < 1e-9);
}

/* p50/p99 of known sets, against the exact values within the histogram's resolution. */
static void test_quantiles(void **state)
{
    (void)state;
    win *w = win_new(2, 1);
    win_totals *t = win_totals_new(w);
    /* 1..1000 ms, spread over two writers and ten seconds */
    for (int v = 1; v <= 1000; v++)
        win_call(w, (size_t)(v % 2), 10 + v % 10, 0, 0, (double)v);
    win_read(w, 10, 20, t);
    assert_int_equal(t->series[0].calls, 1000);
    double p50 = win_quantile(t->series[0].hist, 0.50);
    double p99 = win_quantile(t->series[0].hist, 0.99);
    assert_true(fabs(p50 - 500) <= 500 * 0.1);
    assert_true(fabs(p99 - 990) <= 990 * 0.1);
    assert_true(win_quantile(t->series[0].hist, 1.0) <= 1024.0);
    /* all the same value: every quantile is in that value's bucket */
    win *one = win_new(1, 1);
    win_totals *u = win_totals_new(one);
    for (int k = 0; k < 100; k++)
        win_call(one, 0, 7, 0, 0, 3.0);
    win_call(one, 0, 7, 0, 5, 800.0); /* one slow timeout: the 1 % above p99 */
    win_read(one, 7, 8, u);
    unsigned b = win_bucket(3.0);
    double q50 = win_quantile(u->series[0].hist, 0.50), q99 = win_quantile(u->series[0].hist, 0.99);
    assert_true(q50 >= win_bucket_low(b) && q50 <= win_bucket_low(b + 1));
    assert_true(q99 >= win_bucket_low(b) && q99 <= win_bucket_low(b + 1));
    assert_true(win_quantile(u->series[0].hist, 1.0) >= 512.0);
    /* empty: 0 */
    uint64_t empty[WIN_HBUCKETS] = {0};
    assert_true(win_quantile(empty, 0.5) == 0.0);
    free(u);
    win_free(one);
    free(t);
    win_free(w);
}

typedef struct racer {
    win *w;
    size_t writer;
    int64_t base;
} racer;

static void *write_many(void *arg)
{
    racer *r = arg;
    for (int n = 0; n < 200000; n++)
        win_call(r->w, r->writer, r->base + n / 2000, 0, (unsigned)(n % 3), 0.5);
    return NULL;
}

/* Two writers move through 100 seconds (the ring turns over) while this thread reads: no race
 * (TSan), and once they are done every second reads exactly. */
static void test_writers_race_reader(void **state)
{
    (void)state;
    win *w = win_new(2, 1);
    win_totals *t = win_totals_new(w);
    racer r[2] = {{w, 0, 1000}, {w, 1, 1000}};
    pthread_t th[2];
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&th[k], NULL, write_many, &r[k]), 0);
    for (int k = 0; k < 2000; k++) {
        win_read(w, 1000 + k % 100, 1000 + k % 100 + 30, t);
        assert_true(t->series[0].calls <= 2 * 30 * 2000);
    }
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
    for (int64_t sec = 1040; sec < 1100; sec++) {
        win_read(w, sec, sec + 1, t);
        assert_int_equal(t->series[0].calls, 2 * 2000);
    }
    free(t);
    win_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_one_second), cmocka_unit_test(test_roll_over),
        cmocka_unit_test(test_merge_writers),     cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_quantiles),         cmocka_unit_test(test_writers_race_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
