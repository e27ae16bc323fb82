/* Unit tests of lib/breaker: closed -> open -> half-open -> closed/open, the counting rules, and
 * concurrent callers from several threads (one probe at a time, counts not lost). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "breaker.h"

static void test_opens_after_threshold(void **state)
{
    (void)state;
    breaker b;
    long left = -1;
    assert_int_equal(breaker_init(&b, 3, 1000), 0);
    assert_int_equal(breaker_state_at(&b, 0), BREAKER_CLOSED);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(breaker_admit(&b, 10, NULL), BREAKER_ADMIT);
        breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 10);
    }
    assert_int_equal(breaker_state_at(&b, 10), BREAKER_CLOSED);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 100);
    assert_int_equal(breaker_state_at(&b, 100), BREAKER_OPEN);
    assert_int_equal(breaker_admit(&b, 400, &left), BREAKER_REJECT);
    assert_int_equal(left, 700); /* until it half-opens at 1100 */
    assert_int_equal(breaker_rejections(&b), 1);
    assert_int_equal(breaker_state_at(&b, 1099), BREAKER_OPEN);
    assert_int_equal(breaker_state_at(&b, 1100), BREAKER_HALF_OPEN);
    breaker_destroy(&b);
}

static void test_success_and_rejected_reset(void **state)
{
    (void)state;
    breaker b;
    assert_int_equal(breaker_init(&b, 2, 1000), 0);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 0);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_SUCCESS, 0); /* success or rejected: reset */
    breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 0);
    assert_int_equal(breaker_state_at(&b, 0), BREAKER_CLOSED);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_CANCELLED, 0); /* neither way */
    assert_int_equal(breaker_state_at(&b, 0), BREAKER_CLOSED);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 0);
    assert_int_equal(breaker_state_at(&b, 0), BREAKER_OPEN);
    breaker_destroy(&b);
}

static void test_half_open_probe(void **state)
{
    (void)state;
    breaker b;
    long left = -1;
    assert_int_equal(breaker_init(&b, 1, 100), 0);
    breaker_record(&b, BREAKER_ADMIT, BREAKER_FAILURE, 0);
    assert_int_equal(breaker_admit(&b, 50, NULL), BREAKER_REJECT);
    /* half-open: one probe; the others are refused while it runs */
    assert_int_equal(breaker_admit(&b, 100, NULL), BREAKER_PROBE);
    assert_int_equal(breaker_admit(&b, 101, &left), BREAKER_REJECT);
    assert_int_equal(left, 0);
    /* a failed probe opens it for another open_ms */
    breaker_record(&b, BREAKER_PROBE, BREAKER_FAILURE, 120);
    assert_int_equal(breaker_state_at(&b, 219), BREAKER_OPEN);
    assert_int_equal(breaker_admit(&b, 219, NULL), BREAKER_REJECT);
    /* a cancelled probe lets the next caller probe */
    assert_int_equal(breaker_admit(&b, 220, NULL), BREAKER_PROBE);
    breaker_record(&b, BREAKER_PROBE, BREAKER_CANCELLED, 221);
    assert_int_equal(breaker_state_at(&b, 221), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_admit(&b, 222, NULL), BREAKER_PROBE);
    /* an attempt admitted before it opened does not count once it is open */
    breaker_record(&b, BREAKER_ADMIT, BREAKER_SUCCESS, 223);
    assert_int_equal(breaker_state_at(&b, 223), BREAKER_HALF_OPEN);
    /* the probe's success closes it */
    breaker_record(&b, BREAKER_PROBE, BREAKER_SUCCESS, 230);
    assert_int_equal(breaker_state_at(&b, 230), BREAKER_CLOSED);
    assert_int_equal(breaker_admit(&b, 231, NULL), BREAKER_ADMIT);
    assert_int_equal(breaker_rejections(&b), 3);
    assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    breaker_destroy(&b);
}

#define THREADS 4
#define ROUNDS  20000

static breaker shared;
static atomic_int probes_out, max_probes_out, probes_total;

static void *hammer(void *arg)
{
    uint64_t now = (uint64_t)(uintptr_t)arg;
    for (int i = 0; i < ROUNDS; i++) {
        now += 1;
        breaker_verdict v = breaker_admit(&shared, now, NULL);
        if (v == BREAKER_REJECT)
            continue;
        if (v == BREAKER_PROBE) {
            int out = atomic_fetch_add(&probes_out, 1) + 1;
            int seen = atomic_load(&max_probes_out);
            while (out > seen && !atomic_compare_exchange_weak(&max_probes_out, &seen, out))
                ;
            atomic_fetch_add(&probes_total, 1);
            atomic_fetch_sub(&probes_out, 1);
        }
        breaker_record(&shared, v, i % 3 == 0 ? BREAKER_SUCCESS : BREAKER_FAILURE, now);
    }
    return NULL;
}

static void test_concurrent_callers(void **state)
{
    (void)state;
    pthread_t t[THREADS];
    assert_int_equal(breaker_init(&shared, 2, 5), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)0), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    /* never two probes at once, and the breaker did cycle through half-open */
    assert_int_equal(atomic_load(&max_probes_out), 1);
    assert_true(atomic_load(&probes_total) > 0);
    assert_true(breaker_rejections(&shared) > 0);
    breaker_destroy(&shared);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold),
        cmocka_unit_test(test_success_and_rejected_reset),
        cmocka_unit_test(test_half_open_probe),
        cmocka_unit_test(test_concurrent_callers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
