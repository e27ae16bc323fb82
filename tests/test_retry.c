/* Unit tests of lib/retry: which kinds are retried, the full-jitter bounds, Retry-After, and
 * "a retry never starts unless it can run whole". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "retry.h"

#define MS 1000000ull

static const retry_policy P = {3, 100, 25, 250, RETRY_ON_DEFAULT};

static void test_may_retry(void **state)
{
    (void)state;
    assert_true(retry_may_retry(&P, RETRY_ON_TRANSPORT, 1));
    assert_true(retry_may_retry(&P, RETRY_ON_UPSTREAM_ERROR, 2));
    assert_false(retry_may_retry(&P, RETRY_ON_UPSTREAM_ERROR, 3)); /* attempts used up */
    assert_false(retry_may_retry(&P, RETRY_ON_TIMEOUT, 1));        /* not in "on" */
    assert_false(retry_may_retry(&P, 0, 1));                       /* rejected: never */
    assert_int_equal(retry_kind_bit("rejected"), 0);
    assert_int_equal(retry_kind_bit("timeout"), RETRY_ON_TIMEOUT);
    retry_policy none = {1, 100, 25, 250, RETRY_ON_DEFAULT};
    assert_false(retry_may_retry(&none, RETRY_ON_TRANSPORT, 1));
}

static void test_full_jitter_bounds(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    long max_seen[6] = {0};
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (long n = 2; n <= 5; n++) {
            long d = retry_delay_ms(&P, n, x, -1);
            long cap = 25L << (n - 2);
            if (cap > 250)
                cap = 250;
            assert_true(d >= 0 && d <= cap);
            if (d > max_seen[n])
                max_seen[n] = d;
        }
    }
    /* uniform over the whole range: the top is reached (near enough) */
    assert_true(max_seen[2] >= 24);
    assert_true(max_seen[3] >= 49);
    assert_true(max_seen[5] >= 190); /* 25 * 2^3 = 200 */
    assert_int_equal(retry_delay_ms(&P, 2, 25, -1), 25);
    assert_int_equal(retry_delay_ms(&P, 2, 26, -1), 0);
    /* large n never overflows and stays capped */
    assert_true(retry_delay_ms(&P, 1000, UINT64_MAX, -1) <= 250);
    retry_policy zero = {3, 100, 0, 0, RETRY_ON_DEFAULT};
    assert_int_equal(retry_delay_ms(&zero, 3, 12345, -1), 0);
    /* Retry-After replaces the backoff */
    assert_int_equal(retry_delay_ms(&P, 2, 12345, 2000), 2000);
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(retry_after_ms("1"), 1000);
    assert_int_equal(retry_after_ms(" 2 "), 2000);
    assert_int_equal(retry_after_ms("0"), 0);
    assert_int_equal(retry_after_ms(NULL), -1);
    assert_int_equal(retry_after_ms(""), -1);
    assert_int_equal(retry_after_ms("-1"), -1);
    assert_int_equal(retry_after_ms("1.5"), -1);
    assert_int_equal(retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
    assert_int_equal(retry_after_ms("99999999999999999999"), -1);
}

static void test_fits(void **state)
{
    (void)state;
    uint64_t now = 1000 * MS;
    /* per_try 100: after a 20 ms wait, 100 ms must be left before both ends */
    assert_true(retry_fits(&P, now, 20, now + 120 * MS, now + 500 * MS));
    assert_false(retry_fits(&P, now, 20, now + 119 * MS, now + 500 * MS));
    assert_false(retry_fits(&P, now, 20, now + 500 * MS, now + 119 * MS));
    assert_true(retry_fits(&P, now, 0, now + 100 * MS, now + 100 * MS));
    /* a long Retry-After does not fit: no retry */
    assert_false(retry_fits(&P, now, 2000, now + 1000 * MS, now + 2000 * MS));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_may_retry),
        cmocka_unit_test(test_full_jitter_bounds),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
